package patch

// FuseInto applies cfgs to weights in place for good (offline fusion, as
// `shira-ort apply` does): the same validation and arithmetic as
// New(weights, opts...) followed by Set(cfgs...); the Patcher (and with it
// the saved originals) is dropped. On error nothing was written.
// Quantized weights (Weight.Quant) get exactly the codes Set writes.
func FuseInto(weights []Weight, cfgs []Config, opts ...Option) error {
	p, err := New(weights, opts...)
	if err != nil {
		return err
	}
	if err := p.Set(cfgs...); err != nil {
		return err
	}
	p.Close()
	return nil
}
