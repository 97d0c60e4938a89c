package patch

// FuseInto applies cfgs to weights in place for good (offline fusion, as
// `shira-ort apply` does): the same validation and arithmetic as
// New(weights, opts...) followed by Set(cfgs...); the Patcher (and with it
// the saved originals) is dropped. On error nothing was written.
// Quantized weights (Weight.Quant) get exactly the codes Set writes;
// WithSurvivalReport says how much of the adapters' change they kept.
func FuseInto(weights []Weight, cfgs []Config, opts ...Option) error {
	p, err := New(weights, opts...)
	if err != nil {
		return err
	}
	if err := p.Set(cfgs...); err != nil {
		return err
	}
	if p.opts.survival != nil {
		p.opts.survival(p.Survival())
	}
	p.Close()
	return nil
}
