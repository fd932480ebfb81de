/* Cost of calling an entry point of an AOT library over calling its kernel directly
 * (the W4 case: the gradient of sum(x**2) on 8 doubles). Build the library as in
 * docs/aot.md (`jitgrad aot w4.py:square_sum --args f64[8] --name w4 --function-name grad_loss -o DIR`),
 * then link statically, which also reaches the kernel symbol the shared library hides:
 *
 *     cc -std=c11 -O2 call_overhead.c -IDIR DIR/libw4.a -lm -o call_overhead && ./call_overhead
 */
#define _POSIX_C_SOURCE 199309L
#include <stdio.h>
#include <time.h>
#include "w4.h"

void w4_grad_loss_kernel(void **slots);

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + 1e-9 * t.tv_nsec;
}

int main(void) {
    enum { CALLS = 20000000 };
    static _Alignas(64) unsigned char workspace[64];
    double x[8], g[8], sink = 0;
    for (int i = 0; i < 8; i++) x[i] = i;
    for (int round = 0; round < 3; round++) {
        double start = now();
        for (int i = 0; i < CALLS; i++) {
            void *slots[3] = {x, g, workspace};
            w4_grad_loss_kernel(slots);
            sink += g[1];
        }
        double kernel = (now() - start) / CALLS * 1e9;
        start = now();
        for (int i = 0; i < CALLS; i++) {
            w4_grad_loss(x, g, NULL);
            sink += g[1];
        }
        double entry = (now() - start) / CALLS * 1e9;
        printf("kernel %.2f ns, entry point %.2f ns, overhead %.2f ns per call\n", kernel, entry, entry - kernel);
    }
    return sink == 0;
}
