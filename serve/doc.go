// Package serve serves one exported model with many adapters over HTTP,
// as a library a Go service embeds (New, Server.Handler) and as the CLI's
// `shira-ort serve`.
//
// Requests name their adapter configuration; a sched.Scheduler groups
// requests for the same configuration between switches, bounds every
// request's wait, concatenates same-shape requests into one Run where the
// model has a batch dimension, and answers "overloaded" (503) instead of
// queueing without bound. The adapters come from a registry.Library (or
// any Catalog): a request acquires its adapters at admission, so an
// unknown (404) or invalid (422) adapter is answered before anything is
// queued, and none is unmapped while a request uses it. ShiraEngine
// switches one session between groups of requests; ShiraSlotsEngine serves
// from several sessions of the model used as adapter slots, so that
// configurations held in a slot run without waiting for each other's
// groups.
//
// Endpoints:
//
//   - the Open Inference Protocol (KServe v2 REST): GET /v2/health/live,
//     /v2/health/ready, /v2, /v2/models/{model}, /v2/models/{model}/ready,
//     POST /v2/models/{model}/infer with the request parameter "adapter"
//     ("name", "name@alpha", or several joined by commas; absent for the
//     base model). Tensors travel as JSON numbers; float32 outputs are
//     written in the shortest form that reads back to the same bits.
//   - OpenAI-style, for a character text generator (Options.Text):
//     POST /v1/completions, its "model" field naming the base model, an
//     adapter or a configuration, with "stream": true for server-sent
//     events; GET /v1/models lists the base model and the adapters.
//   - adapters at run time (the convention of multi-LoRA servers), only
//     with Options.AdapterRoot: POST /v1/load_lora_adapter {"lora_name",
//     "lora_path"} for a path inside it, POST /v1/unload_lora_adapter
//     {"lora_name"}.
//   - GET /metrics: Prometheus metrics (request latency, queue depth and
//     wait, switches and switch time, batch sizes, the library's hits,
//     misses and evictions).
//
// Errors are JSON {"error": "..."}: 400 malformed or invalid input, 404
// unknown model or adapter, 413 oversize body, 422 an adapter that fails
// validation, 503 overloaded or shutting down (with Retry-After), 504 a
// request that ran out of Options.RequestTimeout. A bad request changes
// nothing; a panic while serving one becomes a 500.
package serve
