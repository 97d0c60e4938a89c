#include "textflag.h"

// func T2(base unsafe.Pointer, ix []uint32, shift uint)
TEXT ·T2(SB), NOSPLIT, $0-40
	MOVQ base+0(FP), DI
	MOVQ ix_base+8(FP), SI
	MOVQ ix_len+16(FP), R10
	MOVQ shift+32(FP), CX
	XORQ AX, AX
loop:
	CMPQ AX, R10
	JGE done
	MOVL (SI)(AX*4), R11
	SHLQ CX, R11
	PREFETCHT2 (DI)(R11*1)
	INCQ AX
	JMP loop
done:
	RET

