/* Our BatchNorm's forward and backward for small CPU tensors: one C call per direction.
 *
 * Why: on inputs of a few thousand values, the layer's time is the per-call cost of the ~25
 * torch ops that the same formulas take (bnexp/norm.py), not arithmetic. These loops compute
 * the same thing, from the same formulas (see BatchNormFunction's docstring), in one call.
 * Built on first use by bnexp/bn_kernel.py; loaded with ctypes. Not torch's batch_norm.
 *
 * Layout: x is viewed as (outer, C, inner), contiguous. (N, C): (N, C, 1); (N, C, L): (N, C, L);
 * (N, C, H, W): (N, C, H*W); channels_last (N, H, W, C) in memory: (N*H*W, C, 1).
 * Per-channel sums accumulate in double, for float and double inputs alike.
 *
 * The body is written once, in batchnorm_impl.h, for T = float (suffix _f32) and double (_f64).
 */
#include <math.h>
#include <stdlib.h>

#define T float
#define NAME(f) f##_f32
#include "batchnorm_impl.h"
#undef T
#undef NAME

#define T double
#define NAME(f) f##_f64
#include "batchnorm_impl.h"
#undef T
#undef NAME
