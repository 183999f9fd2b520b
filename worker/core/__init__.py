"""The pure decision core: no I/O, no clock, no logging. Inputs in, a plan out."""
