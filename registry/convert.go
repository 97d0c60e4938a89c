package registry

import (
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"time"

	"github.com/shira-ort/shira-ort/adapter"
	"github.com/shira-ort/shira-ort/lora"
	"github.com/shira-ort/shira-ort/ort"
	"github.com/shira-ort/shira-ort/peft"
)

// cacheVersion names the conversion recipe in the cache key: change it
// when a conversion of the same checkpoint would give another file.
const cacheVersion = "shira-ort/registry/convert/v1"

// convert registers the PEFT checkpoint in dir: from the cache when it
// holds the conversion, else converted now and written to the cache.
func (l *Library) convert(ctx context.Context, name, dir string) (*entry, error) {
	cfg, err := peft.LoadConfig(dir)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrInvalidAdapter, err)
	}
	var src Source
	switch cfg.PeftType {
	case "SHIRA":
		src = SourcePeftShira
	case "LORA":
		src = SourcePeftLora
		if l.loraDensity == 0 {
			return nil, fmt.Errorf("%w: a PEFT LoRA checkpoint, and this library converts none (set Options.LoraDensity to the fraction of entries to keep)", ErrInvalidAdapter)
		}
	default:
		return nil, fmt.Errorf("%w: PEFT checkpoint of type %q (want SHIRA or LORA)", ErrInvalidAdapter, cfg.PeftType)
	}
	if l.cacheDir == "" {
		return nil, fmt.Errorf("registry: no cache directory for converted checkpoints (set Options.CacheDir): %w", l.cacheDirErr)
	}
	key, err := l.cacheKey(name, dir, src)
	if err != nil {
		return nil, err
	}
	file := filepath.Join(l.cacheDir, key+".shira")
	if size, err := checkFile(file); err == nil {
		l.log.Debug("registry: converted checkpoint found in the cache", "name", name, "path", dir, "file", file)
		return &entry{name: name, path: dir, file: file, source: src, size: size}, nil
	} else if !errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("registry: cached conversion: %w", err)
	}

	start := time.Now()
	ck, err := peft.Open(dir)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrInvalidAdapter, err)
	}
	var a *adapter.Adapter
	if src == SourcePeftShira {
		if a, _, err = peft.ConvertShira(ck, l.model, peft.ConvertOptions{Name: name}); err != nil {
			return nil, fmt.Errorf("%w: %w", ErrInvalidAdapter, err)
		}
	} else if a, err = l.convertLora(ctx, name, ck); err != nil {
		return nil, err
	}
	// The key must describe the bytes converted: a checkpoint rewritten
	// meanwhile would cache a conversion under the wrong key.
	if again, err := l.cacheKey(name, dir, src); err != nil {
		return nil, err
	} else if again != key {
		return nil, fmt.Errorf("registry: the checkpoint changed while it was converted; register it again")
	}
	if err := os.MkdirAll(l.cacheDir, 0o755); err != nil {
		return nil, fmt.Errorf("registry: cache directory: %w", err)
	}
	if err := adapter.Write(file, a); err != nil { // atomically (internal/atomicfile)
		return nil, fmt.Errorf("registry: cache the conversion: %w", err)
	}
	size, err := checkFile(file)
	if err != nil {
		return nil, fmt.Errorf("registry: cached conversion: %w", err)
	}
	l.mu.Lock()
	l.stats.Conversions++
	l.mu.Unlock()
	l.log.Info("registry: converted PEFT checkpoint", "name", name, "source", string(src), "path", dir, "file", file,
		"tensors", len(a.Tensors), "nnz", a.NNZ(), "took", time.Since(start))
	return &entry{name: name, path: dir, file: file, source: src, size: size}, nil
}

// convertLora converts a LoRA checkpoint by top-k of scale·B·A at the
// library's density, the products computed by ONNX Runtime; the
// conversion stops when ctx ends or the library closes.
func (l *Library) convertLora(ctx context.Context, name string, ck *peft.Checkpoint) (*adapter.Adapter, error) {
	mods, err := ck.Lora()
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrInvalidAdapter, err)
	}
	res, err := lora.Resolve(mods, l.model)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrInvalidAdapter, err)
	}
	e, err := l.loraEngine()
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stop := context.AfterFunc(l.ctx, cancel)
	defer stop()
	a, _, err := lora.ToShira(ctx, e, res, lora.ShiraOptions{Name: name, Density: l.loraDensity, Fingerprint: l.model.Fingerprint()})
	if err != nil {
		if ctx.Err() != nil {
			if l.ctx.Err() != nil {
				return nil, fmt.Errorf("registry: LoRA conversion: %w", ErrClosed)
			}
			return nil, fmt.Errorf("registry: LoRA conversion: %w", err)
		}
		return nil, fmt.Errorf("%w: %w", ErrInvalidAdapter, err)
	}
	a.DefaultAlpha = 1 // as `shira-ort convert --lora`: alpha is PEFT's runtime scaling
	return a, nil
}

// loraEngine starts ONNX Runtime and the engine computing LoRA products,
// once per library.
func (l *Library) loraEngine() (*lora.Engine, error) {
	l.engineMu.Lock()
	defer l.engineMu.Unlock()
	if l.engine != nil {
		return l.engine, nil
	}
	if err := ort.Init(); err != nil {
		return nil, fmt.Errorf("registry: LoRA conversion needs ONNX Runtime: %w", err)
	}
	e, err := lora.NewEngine(nil)
	if err != nil {
		return nil, fmt.Errorf("registry: LoRA conversion: %w", err)
	}
	l.engine = e
	return e, nil
}

// cacheKey is the hex sha256 naming the conversion of the checkpoint in
// dir: over the recipe version, the source kind, the adapter name, the
// model fingerprint, the LoRA density, and the bytes of
// adapter_config.json and adapter_model.safetensors, each field
// length-prefixed.
func (l *Library) cacheKey(name, dir string, src Source) (string, error) {
	h := sha256.New()
	field := func(s string) {
		writeLen(h, int64(len(s)))
		io.WriteString(h, s)
	}
	field(cacheVersion)
	field(string(src))
	field(name)
	field(l.model.Fingerprint())
	if src == SourcePeftLora {
		field(strconv.FormatFloat(l.loraDensity, 'g', -1, 64))
	} else {
		field("")
	}
	for _, f := range []string{peft.ConfigFile, peft.WeightsFile} {
		if err := hashFile(h, filepath.Join(dir, f)); err != nil {
			return "", err
		}
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

// hashFile writes the length and the bytes of the regular file path to h.
func hashFile(h hash.Hash, path string) error {
	f, err := openRead(path)
	if err != nil {
		return fmt.Errorf("registry: %w", err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return fmt.Errorf("registry: %w", err)
	}
	if !st.Mode().IsRegular() {
		return fmt.Errorf("%w: %s is not a regular file", ErrInvalidAdapter, path)
	}
	writeLen(h, st.Size())
	n, err := io.Copy(h, f)
	if err != nil {
		return fmt.Errorf("registry: read %s: %w", path, err)
	}
	if n != st.Size() {
		return fmt.Errorf("registry: %s changed while it was read", path)
	}
	return nil
}

func writeLen(h hash.Hash, n int64) {
	var b [8]byte
	binary.LittleEndian.PutUint64(b[:], uint64(n))
	h.Write(b[:])
}
