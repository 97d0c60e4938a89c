package serve_test

import (
	"bytes"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/shira-ort/shira-ort/serve"
)

// FuzzRequests sends arbitrary bodies to the infer, load and unload
// endpoints of a server over the echo engine (no ORT needed): the server
// never panics (a panic would be a 500 from the handler's recovery) and
// answers every body with 200 or a 4xx, never leaving an adapter held.
// (The fake catalog refuses every load with ErrInvalidAdapter, a 422.)
func FuzzRequests(f *testing.F) {
	for _, s := range []string{
		echoRequest(nil),
		echoRequest(map[string]string{"d": "[[0],[1.5]]"}),
		`{"inputs":[{"name":"i8","datatype":"INT8","shape":[1099511627776,8],"data":[1]}]}`,
		`{"inputs":[],"parameters":{"adapter":"p@0.5,p"}}`,
		`{"inputs":[{"name":"d","datatype":"FP64","shape":[2],"data":[1e400,0]}]}`,
		`{"lora_name":"x","lora_path":"../../etc/passwd"}`,
		`{"lora_name":"x","lora_path":"."}`,
		`[`, `{}`, `null`, `{"inputs":[{"data":{"a":1}}]}`,
	} {
		for which := range uint8(3) {
			f.Add([]byte(s), which)
		}
	}
	cat := newFakeCatalog()
	eng := echoEngine()
	eng.Catalog = cat
	srv, err := serve.New(serve.Options{Name: "echo", Engine: eng, MaxBodyBytes: 1 << 16, AdapterRoot: f.TempDir()})
	if err != nil {
		f.Fatal(err)
	}
	h := srv.Handler()
	paths := []string{"/v2/models/echo/infer", "/v1/load_lora_adapter", "/v1/unload_lora_adapter"}
	f.Fuzz(func(t *testing.T, body []byte, which uint8) {
		path := paths[int(which)%len(paths)]
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, httptest.NewRequest(http.MethodPost, path, bytes.NewReader(body)))
		if rec.Code != http.StatusOK && (rec.Code < 400 || rec.Code >= 500) {
			t.Fatalf("%s answered %d to %q: %s", path, rec.Code, body, rec.Body)
		}
		if n := cat.heldCount(); n != 0 {
			t.Fatalf("%d adapter(s) still held after %q", n, body)
		}
	})
}
