package peft

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
)

// File names inside a PEFT adapter directory.
const (
	ConfigFile  = "adapter_config.json"
	WeightsFile = "adapter_model.safetensors"
)

// ErrCheckpoint is wrapped by every error about a missing, malformed or
// inconsistent checkpoint.
var ErrCheckpoint = errors.New("peft: bad checkpoint")

// ErrNonFinite is wrapped by every error about a value that would be
// written as NaN or an infinity: a checkpoint value that overflows the
// stored value dtype once rounded, or a LoRA scale (lora_alpha/r) that
// overflows float32. Package lora wraps it too (lora.ErrNonFinite).
var ErrNonFinite = errors.New("peft: non-finite value")

// Config is the subset of adapter_config.json that shira-ort uses.
type Config struct {
	// PeftType is "SHIRA" or "LORA".
	PeftType string `json:"peft_type"`
	// R is the SHiRA parameter budget (nnz = r*(in+out)) or the LoRA rank.
	R int `json:"r"`
	// MaskType and RandomSeed describe a SHiRA mask (informational).
	MaskType   string `json:"mask_type,omitempty"`
	RandomSeed *int64 `json:"random_seed,omitempty"`
	// FanInFanOut is true for modules storing their weight [in, out].
	FanInFanOut bool `json:"fan_in_fan_out"`
	// LoraAlpha, UseRSLoRA, RankPattern and AlphaPattern set LoRA scales.
	// LoraAlpha is nil when the config has none (then the scale is 1:
	// alpha = r); 0 is a real alpha, giving scale 0, as in PEFT.
	LoraAlpha    *float64           `json:"lora_alpha,omitempty"`
	UseRSLoRA    bool               `json:"use_rslora,omitempty"`
	RankPattern  map[string]int     `json:"rank_pattern,omitempty"`
	AlphaPattern map[string]float64 `json:"alpha_pattern,omitempty"`
	// TargetModules is a list of names or a regular expression (raw JSON).
	TargetModules json.RawMessage `json:"target_modules,omitempty"`
	// BaseModel is base_model_name_or_path (informational).
	BaseModel string `json:"base_model_name_or_path,omitempty"`
}

// LoadConfig reads DIR/adapter_config.json.
func LoadConfig(dir string) (*Config, error) {
	p := filepath.Join(dir, ConfigFile)
	b, err := os.ReadFile(p)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrCheckpoint, err)
	}
	var c Config
	if err := json.Unmarshal(b, &c); err != nil {
		return nil, fmt.Errorf("%w: %s: %w", ErrCheckpoint, p, err)
	}
	c.PeftType = strings.ToUpper(c.PeftType)
	if c.PeftType == "" {
		return nil, fmt.Errorf("%w: %s: no peft_type", ErrCheckpoint, p)
	}
	return &c, nil
}

// patternFor returns the value of the pattern map entry matching module the
// way PEFT does (the key as a regular expression matching the whole module
// path or a dot-separated suffix of it), longest key first.
func patternFor[V any](m map[string]V, module string) (V, bool) {
	var best string
	var bestV V
	found := false
	for k, v := range m {
		re, err := regexp.Compile(`(^|.*\.)(` + k + `)$`)
		if err != nil {
			if module != k && !strings.HasSuffix(module, "."+k) {
				continue
			}
		} else if !re.MatchString(module) {
			continue
		}
		if !found || len(k) > len(best) {
			best, bestV, found = k, v, true
		}
	}
	return bestV, found
}
