package ort

import "errors"

// ErrClosed is returned by every method called on a closed Session.
var ErrClosed = errors.New("ort: session is closed")

// ErrNoWeights is returned by the adapter methods of a session without
// exposed weights (one made by OpenModel).
var ErrNoWeights = errors.New("ort: session has no exposed weights (opened with OpenModel, not Open)")

// ErrInput is wrapped by Run's errors about its inputs: an unknown or
// missing name, a wrong dtype, rank, shape or byte length.
var ErrInput = errors.New("ort: bad input")

// ErrUnknownWeight is wrapped by Session.Weight's error for a name that is
// not an exposed weight.
var ErrUnknownWeight = errors.New("ort: no exposed weight")
