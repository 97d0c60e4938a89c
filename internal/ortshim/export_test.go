package ortshim

// TrackedRecords exposes trackedRecords to the external tests.
var TrackedRecords = trackedRecords
