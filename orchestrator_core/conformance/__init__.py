"""``mender-orchestrator check-interface``: proves that one Component's Interface behaves as
the protocol and the engine require, by driving it through the same driver layer
(``orchestrator_core.drivers``) the engine uses.

``probe`` makes and records each call (time, output, File API writes), ``walk`` runs the
engine's state sequences for one Artifact (with a failure injected where the engine may roll
back), ``checks`` turns what was seen into named checks, ``command`` is the command line.
"""
