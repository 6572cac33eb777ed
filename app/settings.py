"""The app's controls of the run settings, built from their declarations (engine.config).

Each control is keyed, and bound to the URL query parameter, by its config field's name; its
label, help, values and default are the field's own, so the app starts from the same recipe as
`python -m engine train`. An imported config.json is checked against the values the controls
can hold (a widget given a value outside raises, or silently falls back to its default).
"""

from engine import SETTINGS

HEAD_NAMES = {"dense": "dense (nn.Linear)", "fixed_fanin": "fixed fan-in", "group_shared": "group-shared",
              "dense_sparse": "dense head + sparse tail", "mach": "MACH (hashed)"}
# the settings the app has controls for: the sidebar's, then the Train page's
SIDEBAR = ("head", "hidden", "fanin", "group_size", "groups", "index_init", "head_size", "dense_share",
           "mach_buckets", "mach_reps", "mach_members", "seed")
PAGE = ("epochs", "lr", "batch_size", "eval_every", "warmup", "decay", "val_fraction", "patience", "dropout",
        "dense_dropout", "normalize", "dst", "dst_every", "dst_zeta")
RECIPE = SIDEBAR + PAGE   # what a preset sets
MACHINE = ("device",)     # drawn by the sidebar only where this machine offers a choice (a GPU)
CONTROLLED = RECIPE + MACHINE
ADVANCED = ("groups", "index_init", "mach_members", "warmup", "decay", "val_fraction", "patience", "dropout",
            "dense_dropout", "normalize", "dst", "dst_every", "dst_zeta")  # not in classroom mode
# how a control draws when its declaration alone does not say (else: choices -> selectbox, bool ->
# toggle, a list of values -> select slider, a (low, high) range -> slider)
KIND = {"groups": "radio", "index_init": "radio", "device": "radio", "seed": "number", "eval_every": "number",
        "dst_every": "number"}
FORMAT = {"hidden": lambda v: str(v or "none"), "lr": lambda v: f"{v:g}"}
STEP = {float: 0.05}


def allowed(name):
    """The values the control of setting `name` can hold: a list, or a (low, high) range."""
    m = SETTINGS[name].metadata
    return list(m["choices"]) if m["choices"] is not None else m["ui"]


def default(name):
    """The declared default of setting `name` (engine.SETTINGS)."""
    return SETTINGS[name].default


def help_of(name):
    m = SETTINGS[name].metadata
    names = ": " + "; ".join(f"{h}: {n}" for h, n in HEAD_NAMES.items()) if name == "head" else ""
    return m["help"] + names + (f"; {m['zero']}" if m["zero"] else "")


def control(container, name, **kw):
    """Draw the control of config field `name` into `container` (st.sidebar, a column, ...)."""
    f, m = SETTINGS[name], SETTINGS[name].metadata
    value, values = default(name), allowed(name)
    common = dict(key=name, help=help_of(name), bind="query-params", **kw)
    label = m["label"][0].upper() + m["label"][1:]
    kind = KIND.get(name)
    if m["choices"] is not None:
        draw = container.radio if kind == "radio" else container.selectbox
        extra = {"horizontal": True} if kind == "radio" else {}
        return draw(label, values, index=values.index(value), **extra, **common)
    if f.type is bool:
        return container.toggle(label, value=value, **common)
    if isinstance(values, list):
        return container.select_slider(label, values, value, format_func=FORMAT.get(name, str), **common)
    if kind == "number":
        return container.number_input(label, *values, value, **common)
    return container.slider(label, *values, value, *([STEP[f.type]] if f.type in STEP else []), **common)


def settings_from(state, **overrides):
    """The flat settings (TrainConfig.of's arguments) of the controls' state (session state), plus overrides."""
    return {**{name: state[name] for name in CONTROLLED if name in state}, **overrides}


def outside_the_controls(cfg):
    """The settings of an imported config that the controls cannot hold, and those set away from
    their default that no control holds, one phrase each (an import sets all of a config or nothing)."""
    flat = cfg.flat()
    out = [f"{name}={flat[name]!r} has no control on this page (train it with `python -m engine train`)"
           for name in sorted(set(flat) - set(CONTROLLED) - {"data"}) if flat[name] != default(name)]
    for name in (n for n in CONTROLLED if n in flat):
        value, values = flat[name], allowed(name)
        if isinstance(values, list) and value not in values:
            out.append(f"{name}={value!r} is not one of {values}")
        elif isinstance(values, tuple) and not values[0] <= value <= values[1]:
            out.append(f"{name}={value!r} is outside [{values[0]}, {values[1]}]")
    return out

