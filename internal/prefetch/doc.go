// Package prefetch asks the CPU for the cache lines of scattered elements
// ahead of the loops that touch them: a plain scatter loop keeps only as
// many cache misses in flight as its out-of-order window allows, while
// prefetches retire at once. It is used by the patch kernels and by the
// floor measurement of internal/switchbench.
package prefetch
