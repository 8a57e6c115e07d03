"""Triton code of heal_kernels, one module per op; the torch launchers are ``heal_kernels.<op>``.

``primitives`` holds the device functions and constants shared by more than one
kernel module.  Nothing under ``_kernels`` imports a launcher module.
"""
