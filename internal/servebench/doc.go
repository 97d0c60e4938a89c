// Package servebench is the load comparison of issue 15 (docs/serving.md):
// one model, several serving strategies, the same requests, side by side.
//
// For each model, every selected strategy's server (serve.New over a
// serve.Engine) is started in-process on a loopback TCP listener
// (httptest.NewServer), and the vegeta load generator drives it in a closed
// loop (rate 0, Workers = MaxWorkers = clients: each client sends its next
// request when the previous one is answered) over a grid of scenarios: the
// number of adapters requests choose from, how they choose (uniform or Zipf),
// and the number of clients. Within a scenario every strategy is warmed up,
// then the measured time is cut into slices (Config.Slice) that the
// strategies take in turns, rotating which goes first, so the machine's
// drift and other load on shared cores fall on all alike; every strategy is
// sent the same sequence of requests. The load generator runs in the same
// process and on the same cores as the servers.
//
// # Strategies
//
//   - shira-packed: ort.OpenExported in ort.ModePacked (ORT's own prepacked
//     buffers are patched), a registry.Library over the model's .shira
//     adapters, serve.ShiraEngine; the scheduler is exclusive (one active
//     configuration, switches between groups) and batches same-adapter
//     requests up to Config.MaxBatch rows where the model has a free batch
//     dimension (serve.Batchable).
//   - shira-slots: serve.ShiraSlotsEngine over Config.Slots packed sessions
//     (DefaultSlots per model): each holds a configuration, a Run's slot is
//     switched only when no slot holds its configuration; not exclusive.
//   - shira-live: shira-packed in ort.ModeLive (exposed weights unprepacked).
//   - ort-lora: ORT's own per-run LoRA. The original model gets a zero LoRA
//     branch on every weight SHiRA adapts (lorabranch.AddBranches), with the
//     rank whose parameter count equals the SHiRA adapters'
//     (lorabranch.RankForDensity: r = 8 on the MLP at density 1 %, r = 1 on
//     charlm, whose SHiRA adapters have r·(K+N) entries per weight); it is
//     opened with ort.OpenModelData (a plain, prepacked session whose branch
//     parameters A and B are overridable initializers), and each Run feeds the
//     request's .onnx_adapter through Session.RunLoRA. The scheduler is not
//     exclusive (no Switch; Runs of different adapters could overlap up to
//     Config.MaxConcurrent) and still batches same-adapter requests. The
//     catalog keeps loaded *ort.LoraAdapter values in an LRU
//     (Config.MaxOpen unused ones, released by Close). Single adapters only.
//   - lora-merged: LoRA merged per group with the in-place BLAS GEMM
//     (lora.AddInPlace) into copies of the exported weights, handed to one
//     ORT session as a whole-tensor LoRA adapter passed on every Run of the
//     group; exclusive. Not run on the 1.03 B model.
//   - base: a plain ort.OpenModel session of the original model; requests name
//     adapters, which the catalog accepts and the backend ignores: the
//     ceiling, with the same scheduling as ort-lora.
//
// # Models
//
//   - mlp: the 67 M-parameter MLP of internal/sessionbench (8 × 1024→4096→1024,
//     cached by sessionbench.Generate), synthetic SHiRA adapters overwriting a
//     random 1 % of every exposed weight (internal/synth), KServe v2 infer
//     requests of one row from a fixed pool of 64 random inputs.
//   - charlm: the shipped character text generator (charlm.Prepare),
//     synthetic SHiRA adapters with r·(K+N) entries per weight at r = 1 (the
//     parameter count of an r = 1 LoRA on the same weight), /v1/completions
//     requests (greedy) from a fixed pool of prompts of 12 characters, each
//     asking for a number of tokens drawn uniformly from Config.Tokens
//     (default 16).
//
// Adapters are generated once into Config.Dir/<model>/serve-adapters (a
// .shira and an .onnx_adapter per adapter, named a0000, a0001, ...), lazily up
// to the largest adapter count asked for, and reused by later runs.
//
// Every session of a run (the strategies' and the references') has ORT's
// intra-op spinning off unless Config.Spin: the strategies' sessions are
// open side by side on the same cores, and a pool spinning after its Runs
// slows another session's next Runs.
//
// # What is measured
//
// Per (model, strategy, scenario): throughput and latency percentiles from
// vegeta's Metrics; errors (non-2xx other than 503, and transport errors)
// and deliberate overload answers (503) separately; the scheduler's Stats
// delta (switches per 1 000 scheduler requests, mean group size = requests
// per switch, mean rows per Run); the process's RSS and the catalog's open
// adapters. Per model, a calibration before the load measures the Run cost
// of the base session, the per-run LoRA session and the packed session, and
// the packed switch cost, and derives the break-even group size
// g* = t_switch / (t_lora − t_base) at which SHiRA's switches cost less than
// per-run LoRA's branches.
//
// # Verification
//
// With Config.Verify every response is checked against the offline-fused
// output of its configuration, computed by a plain ORT session of a
// standalone model (export.Model.WriteStandalone) for every input of the
// pool: the SHiRA adapter fused by export.Model.Fuse for shira-packed and
// shira-slots, bit for bit; the same model run unprepacked (session.disable_prepacking, the
// kernels a live session runs) for shira-live, bit for bit against either its
// single-row or its batched result (unprepacked MLAS computes a lone row
// differently from a row of a batch); the LoRA adapter merged by
// lorabranch.Merge for ort-lora, within loraRelTol·max|output|, with the
// largest difference reported; the original model for base, bit for bit.
// Completions (greedy) are compared as text with the prefix of their
// length of the reference (generated to Config.Tokens.Max tokens), which
// catches a wrong configuration only when its text differs (the report
// counts how often the expected texts differ from the base model's). KServe requests carry the id
// "<adapter>/<input>", which the server echoes; completions carry it, and
// their token count, in the URL's query. Verifying the MLP needs a fused 268 MB model per adapter and
// kind of reference, so with Verify the MLP runs only adapter counts up to
// VerifyMaxAdaptersMLP.
package servebench
