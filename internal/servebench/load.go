package servebench

import (
	"bytes"
	"context"
	"fmt"
	"math/rand/v2"
	"net/http"
	"os"
	"runtime/debug"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	vegeta "github.com/tsenart/vegeta/v12/lib"

	"github.com/shira-ort/shira-ort/internal/sessionbench"
)

// scenario is one point of the load grid.
type scenario struct {
	adapters int
	dist     string
	clients  int
}

func (sc scenario) String() string {
	return fmt.Sprintf("%d adapters, %s, %d clients", sc.adapters, sc.dist, sc.clients)
}

// seed is the request stream's seed: the same for every strategy of a
// scenario, so they are sent the same sequence of requests.
func (sc scenario) seed() uint64 {
	d := uint64(0)
	if sc.dist == Zipf {
		d = 1
	}
	return uint64(sc.adapters)<<20 | uint64(sc.clients)<<4 | d
}

// requests generates the requests of a scenario: an adapter among the
// first sc.adapters (uniform or Zipf) and an input of the pool (uniform)
// per request.
type requests struct {
	m    *model
	n    int
	url  string
	mu   sync.Mutex
	rng  *rand.Rand
	zipf *rand.Zipf
}

func newRequests(m *model, sc scenario, seed uint64, base string, zipfS float64) *requests {
	r := &requests{m: m, n: sc.adapters, rng: rand.New(rand.NewPCG(seed, 0x5e7e))}
	if sc.dist == Zipf && sc.adapters > 1 {
		r.zipf = rand.NewZipf(r.rng, zipfS, 1, uint64(sc.adapters-1))
	}
	if m.kserve() {
		r.url = base + "/v2/models/" + m.name + "/infer"
	} else {
		r.url = base + "/v1/completions"
	}
	return r
}

var jsonHeader = http.Header{"Content-Type": []string{"application/json"}}

// next picks the next request's adapter, input and (text generator)
// completion length.
func (r *requests) next() (adapterIdx, input, tokens int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	switch {
	case r.n == 1:
	case r.zipf != nil:
		adapterIdx = int(r.zipf.Uint64())
	default:
		adapterIdx = r.rng.IntN(r.n)
	}
	input = r.rng.IntN(r.m.poolSize())
	if t := r.m.tokens; t.Max > t.Min {
		return adapterIdx, input, t.Min + r.rng.IntN(t.Max-t.Min+1)
	}
	return adapterIdx, input, r.m.tokens.Min
}

// targeter is safe for concurrent use (vegeta calls it from every worker).
func (r *requests) targeter() vegeta.Targeter {
	return func(t *vegeta.Target) error {
		ai, in, toks := r.next()
		name := adapterName(ai)
		id := name + "/" + strconv.Itoa(in)
		var b bytes.Buffer
		if r.m.kserve() {
			fmt.Fprintf(&b, `{"id":%q,"parameters":{"adapter":%q},"inputs":[{"name":%q,"shape":[1,%d],"datatype":"FP32","data":`,
				id, name, r.m.inName, r.m.inputs[in].Shape[1])
			b.Write(r.m.inputJSON[in])
			b.WriteString("}]}")
			t.URL = r.url
		} else {
			fmt.Fprintf(&b, `{"model":%q,"prompt":%q,"max_tokens":%d,"temperature":0}`, name, r.m.prompts[in], toks)
			t.URL = r.url + "?id=" + id + "&tokens=" + strconv.Itoa(toks) // completions echo no id: the URL carries it
		}
		t.Method, t.Body, t.Header = http.MethodPost, b.Bytes(), jsonHeader
		return nil
	}
}

// outcome accumulates what the attacks on one strategy returned.
type outcome struct {
	metrics    vegeta.Metrics // latencies (its throughput spans the gaps between slices: unused)
	wall       time.Duration  // the attacks' time, from start until the last answer
	success    int
	errors     int
	overloaded int
	errorText  []string
	kept       []kept
}

// attack drives the server with clients closed-loop clients for d and adds
// the results to o (nil: discard them).
func attack(ctx context.Context, tr vegeta.Targeter, transport *http.Transport, clients int, d time.Duration, keep bool, o *outcome) {
	atk := vegeta.NewAttacker(
		vegeta.Client(&http.Client{Transport: transport, Timeout: 5 * time.Minute}),
		vegeta.Workers(uint64(clients)), vegeta.MaxWorkers(uint64(clients)),
	)
	stop := context.AfterFunc(ctx, func() { atk.Stop() })
	defer stop()
	t0 := time.Now()
	for res := range atk.Attack(tr, vegeta.Rate{Freq: 0, Per: time.Second}, d, "servebench") {
		if o == nil {
			continue
		}
		o.metrics.Add(res)
		switch {
		case res.Code >= 200 && res.Code < 300:
			o.success++
			if keep {
				o.kept = append(o.kept, kept{url: res.URL, body: res.Body})
			}
		case res.Code == http.StatusServiceUnavailable:
			o.overloaded++
		default:
			o.errors++
			msg := res.Error
			if len(res.Body) > 0 {
				msg += ": " + strings.TrimSpace(string(res.Body))
			}
			if !slices.Contains(o.errorText, msg) && len(o.errorText) < 5 {
				o.errorText = append(o.errorText, msg)
			}
		}
	}
	if o != nil {
		o.wall += time.Since(t0)
	}
}

// newTransport is the load generator's HTTP transport for one scenario and
// strategy: keep-alive connections, one per client.
func newTransport() *http.Transport {
	return &http.Transport{MaxIdleConnsPerHost: 1024, DisableCompression: true, IdleConnTimeout: time.Minute}
}

// rssMB returns the process's VmRSS in MiB after the Go heap returned its
// free pages to the operating system.
func rssMB() float64 {
	debug.FreeOSMemory()
	return float64(sessionbench.ProcStatusKB("VmRSS")) / 1024
}

// cpuTime returns the process's user + system CPU time so far.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	if syscall.Getrusage(syscall.RUSAGE_SELF, &ru) != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// systemBusy returns the time all CPUs spent busy (not idle or waiting for
// I/O) since boot, from /proc/stat.
func systemBusy() time.Duration {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return 0
	}
	line, _, _ := strings.Cut(string(b), "\n")
	f := strings.Fields(line)
	if len(f) < 8 || f[0] != "cpu" {
		return 0
	}
	var busy int64
	for i, v := range f[1:] {
		if i == 3 || i == 4 { // idle, iowait
			continue
		}
		n, _ := strconv.ParseInt(v, 10, 64)
		busy += n
	}
	return time.Duration(busy) * time.Second / 100 // USER_HZ
}
