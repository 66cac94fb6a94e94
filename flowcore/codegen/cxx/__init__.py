"""What the C++ backends (`cpu`, `cuda`) share: the printer of sympy expressions in the kernel's
scalar type, the per-sample kernel bodies, and the header every generated file includes."""
