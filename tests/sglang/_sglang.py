"""Test set-up that differs between the supported SGLang releases (heal_sglang.compat.SUPPORTED)."""

from heal_sglang import compat


def initialize_model_parallel(world: int, rank: int = 0) -> None:
    """SGLang's model-parallel groups for a ``world``-rank TP layout (distributed already initialised)."""
    from sglang.srt.distributed import initialize_model_parallel as init

    if compat.installed() == compat.SGLANG_0517:
        init(tensor_model_parallel_size=world)
        return
    # 0.5.23 reads the group widths from the published runtime context, as SGLang's own tests publish it
    from sglang.test.test_utils import publish_build_topology

    publish_build_topology(world_rank=rank, tp_size=world)
    init()


def resolved_server_args(**kw):
    """ServerArgs as SGLang's launchers resolve them: at construction on 0.5.17, by ``resolve_once``
    on 0.5.23 (read back through the declarations)."""
    from sglang.srt.server_args import ServerArgs

    sa = ServerArgs(**kw)
    if compat.installed() == compat.SGLANG_0523:
        sa.resolve_once()
    return compat.resolved_args(sa)
