package ort

import "errors"

// ErrClosed is returned by every method called on a closed Session.
var ErrClosed = errors.New("ort: session is closed")

// ErrNoWeights is returned by the adapter methods of a session without
// exposed weights (one made by OpenModel).
var ErrNoWeights = errors.New("ort: session has no exposed weights (opened with OpenModel, not Open)")
