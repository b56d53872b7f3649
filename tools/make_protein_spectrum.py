"""Regenerate the reference protein spectrum table shipped with the sharpening kernels.

    python tools/make_protein_spectrum.py [MODEL ...]

MODEL: PDB/mmCIF files (default: ../shared/data/models/5ni1_updated.cif, the model the shipped
table was computed from). The table (``ln`` rms amplitude per Fourier shell of the B = 0 density
of the protein atoms, 100-1.5 Å, normalised to 0 at 10 Å; several models are averaged) is
written to ``protocols/sharpen/kernels/_protein_spectrum.py``; see
``emforge.protocols.sharpen.kernels.refspec`` and docs/conventions.md ("Reference protein
spectrum"). ``tests/protocols/sharpen/test_refspec.py`` recomputes it and checks the shipped
table matches.
"""

from __future__ import annotations

import sys
from pathlib import Path

from emforge.protocols.sharpen.kernels.refspec import table_module_text

ROOT = Path(__file__).resolve().parents[1]
DEFAULT = ROOT / ".." / "shared" / "data" / "models" / "5ni1_updated.cif"
TABLE = ROOT / "protocols" / "sharpen" / "kernels" / "_protein_spectrum.py"


def main(argv: list[str]) -> int:
    paths = [Path(a) for a in argv] or [DEFAULT.resolve()]
    missing = [str(p) for p in paths if not p.is_file()]
    if missing:
        print(f"make_protein_spectrum: model file not found: {', '.join(missing)}", file=sys.stderr)
        return 2
    TABLE.write_text(table_module_text(paths), encoding="utf-8")
    print(f"wrote {TABLE} from {', '.join(p.name for p in paths)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
