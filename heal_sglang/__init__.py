"""heal_sglang: everything that knows SGLang 0.5.17.

The entry point ``heal_sglang.plugin:register`` (group ``sglang.srt.plugins``) registers
attention backend ``heal``, quantization methods ``heal`` and ``layercast`` and the hooks
(INT16 KV pool, FP32 ops, argument rules).  Modules import SGLang lazily where SGLang
calls them before it has parsed its arguments.  heal_kernels never imports this package.
"""
