"""The preset the tests build on: the embedded addition task's settings (gspo/presets/addition.yaml), which were
the library's defaults before they became verl's. Tests that pass a local model path (which selects no preset)
apply it explicitly, so their other settings stay the toy task's."""

ADDITION_PRESET = "addition"
PRESET_ARGS = ["--preset", ADDITION_PRESET]  # for `gspo train` / `gspo validate` command lines
