package ortshim

// TrackedRecords exposes trackedRecords to the external tests.
var TrackedRecords = trackedRecords

// SetHugePages exposes setHugePages to the external tests.
var SetHugePages = setHugePages
