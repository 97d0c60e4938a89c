// Package hugemem allocates large buffers in anonymous memory backed by
// transparent huge pages (2 MiB), for weights that are patched in place.
//
// A SHiRA switch touches a few cache lines on every 4 KiB page of a
// weight, so with 4 KiB pages every page costs a TLB miss and a page walk
// per switch, and a private file mapping is made of 4 KiB pages once
// written (copy on write). The same bytes in anonymous memory advised
// MADV_HUGEPAGE need 512 times fewer TLB entries. On Linux with the
// transparent huge page setting "always" or "madvise", [Alloc] gives such
// memory; elsewhere, or if the kernel refuses, it falls back to ordinary
// memory, which is correct, only slower.
package hugemem

// PageSize is the huge page size buffers are aligned to (x86-64 and
// arm64 with 4 KiB base pages).
const PageSize = 2 << 20
