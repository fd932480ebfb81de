"""IR -> IR passes.

Importing the package gives the rules of ops with regions (loops, conds, checkpoints)
the passes they run on their bodies, through jitgrad.primitives.region_passes: the op
records sit in the layer below this one and do not import it."""
from jitgrad.primitives import region_passes
from .jvp import jvp_function
from .reverse import partial_eval_function, transpose_function
from .simplify import DeadCodeElimination

region_passes.install(jvp_function=jvp_function, partial_eval_function=partial_eval_function,
                      transpose_function=transpose_function,
                      eliminate_dead_code=lambda fn: DeadCodeElimination().run(fn))
