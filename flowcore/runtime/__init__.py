"""Running a compiled objective: its plan (``compiled``), its batched network calls (``netcalls``),
its kernels as autograd nodes (``segment_op``) and the CPU allocator setting (``allocator``). The
build cache and the extension loader it relies on are one layer down, in flowcore.native."""
