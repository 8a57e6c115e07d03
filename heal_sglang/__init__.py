"""heal_sglang: everything that knows SGLang (the plugin, the attention backend, the quantization methods).

Not wired yet: the SGLang plugin is issue 4.  heal_kernels never imports this package.
"""
