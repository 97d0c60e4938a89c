package lora

// SetTileBytes sets the fp16/bf16 tile size for a test and returns the
// function that restores it.
func SetTileBytes(n int) (restore func()) {
	old := tileBytes
	tileBytes = n
	return func() { tileBytes = old }
}
