"""How each configuration is drawn: one colour per variant in every plot (the registry's),
grey dashes for the reference servers (the brokers among them labelled so). A configuration with a non-default stack size keeps
its variant's colour and gets a dashed line, one on more server cores a dash-dotted one."""
from chatbench.results_csv import server_threads_of
from chatbench.variants import PEER_BY_NAME, VARIANTS, config_label

# "system": microbench's units that are no variant's model (syscalls, the protocol).
COLOURS = dict({v.name: v.colour for v in VARIANTS}, system="#7f7f7f")


def style(rows, config):
    """matplotlib keyword arguments of a configuration's line."""
    r = next(r for r in rows if r["config"] == config)
    peer = PEER_BY_NAME.get(r["variant"])
    if peer:  # muted: a reference, not a candidate
        return {"color": peer.colour, "linestyle": peer.dashes,
                "label": f"{config} ({'broker' if peer.broker else 'reference'})"}
    # More server cores (--server-threads): the variant's colour, dash-dotted.
    dashes = "--" if r["stack_size"] else "-." if server_threads_of(r) > 1 else "-"
    return {"color": COLOURS.get(r["variant"], "black"), "linestyle": dashes, "label": config_label(config)}
