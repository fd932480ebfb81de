"""The seed's custom-gradient example: an op that is the identity going forward and clips
its gradient to [-1, 1] going backward — as a CustomOp on an eager tape, inside a
compiled gradient, and as a jitgrad.custom_vjp function.

Run:  python examples/custom_gradient.py
"""
import numpy as np

import jitgrad


class ClipGradient(jitgrad.CustomOp):
    def forward(self, inputs):
        return inputs[0] * 1

    def backward(self, grad_output, inputs):
        return [np.clip(grad_output, -1.0, 1.0)]


def main():
    x = np.array([0.5, -2.0, 3.0])
    clip = ClipGradient()

    tape = jitgrad.GradientTape()
    t = tape.variable(x)
    y = tape.custom_op(clip, [t])                       # identity forward
    print("tape gradient of sum(5 * clip(x)):", tape.gradient(np.sum(5.0 * y), t))

    g = jitgrad.grad(lambda v: np.sum(5.0 * jitgrad.custom_op(clip, [v])))
    print("compiled gradient of the same:     ", g(x))

    @jitgrad.custom_vjp
    def clip_grad(v):
        return v

    clip_grad.defvjp(lambda v: (v, None), lambda _, ct: (np.clip(ct, -1.0, 1.0),))
    print("custom_vjp version:                ", jitgrad.grad(lambda v: np.sum(5.0 * clip_grad(v)))(x))
    print("without clipping:                  ", jitgrad.grad(lambda v: np.sum(5.0 * v))(x))


if __name__ == "__main__":
    main()
