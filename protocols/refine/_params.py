"""Parameters of the refinement protocols, named after EMAN2's e2refine options.

Comparators and aligners are typed choices with their own sub-parameters (pydantic models
told apart by ``name``), never strings to parse: ``simcmp={"name": "frc", "maxres": 10}`` on
the CLI is ``-p simcmp='{"name": "frc", "maxres": 10}'``. Defaults are those of EMAN2.0's
``e2refine.py`` (docs/user-guide.md, "Refinement", lists where they differ from
e2refine_easy). The param groups are mixed into each protocol's ``Params``.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from emforge.engine import Level, ProtocolParams, param

__all__ = [
    "CCC",
    "FRC",
    "Phase",
    "SqEuclidean",
    "Comparator",
    "Aligner",
    "RefineAligner",
    "AutoMask3D",
    "Lowpass",
    "ProjectParams",
    "SimmxParams",
    "ClassifyParams",
    "ClassAverageParams",
    "Make3DParams",
    "LoopParams",
    "cmp_options",
]


class _Sub(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)


class CCC(_Sub):
    """EMAN2 ``ccc``: minus the Pearson correlation (-1 = identical)."""

    name: Literal["ccc"] = "ccc"


class SqEuclidean(_Sub):
    """EMAN2 ``sqeuclidean``: mean squared difference."""

    name: Literal["sqeuclidean"] = "sqeuclidean"
    normto: bool = Field(False, description="least-squares scale the reference to the image first")
    zeromask: bool = Field(False, description="ignore pixels that are 0 in either image")


class FRC(_Sub):
    """EMAN2 ``frc``: minus the weighted mean Fourier ring correlation in a band."""

    name: Literal["frc"] = "frc"
    minres: float = Field(200.0, gt=0, description="low-resolution end of the band (Å)")
    maxres: float = Field(8.0, gt=0, description="high-resolution end of the band (Å)")
    snrweight: bool = Field(
        False, description="weight rings by each particle's SNR (needs CTF; else ignored)"
    )
    zeromask: bool = Field(False, description="zero pixels that are 0 in either image first")
    sweight: bool = Field(True, description="weight rings by their number of coefficients")


class Phase(_Sub):
    """EMAN2 ``phase``: weighted mean phase error (radians)."""

    name: Literal["phase"] = "phase"
    minres: float = Field(500.0, gt=0, description="low-resolution end of the band (Å)")
    maxres: float = Field(10.0, gt=0, description="high-resolution end of the band (Å)")
    snrweight: bool = Field(False, description="weight rings by each particle's SNR")
    ampweight: bool = Field(False, description="weight coefficients by |A||B|")


Comparator = Annotated[CCC | SqEuclidean | FRC | Phase, Field(discriminator="name")]


class Aligner(_Sub):
    """Exhaustive 2-D aligner: EMAN2 ``rotate_translate_flip`` (mirror tried) or
    ``rotate_translate``."""

    name: Literal["rotate_translate_flip", "rotate_translate"] = "rotate_translate_flip"
    maxshift: float | None = Field(
        None, ge=0, description="largest shift per axis (px); None: box/4"
    )


class RefineAligner(_Sub):
    """EMAN2 ``refine``: local simplex refinement of the exhaustive alignment."""

    name: Literal["refine"] = "refine"
    precision: float = Field(0.04, gt=0, description="final step of the simplex (px)")
    maxiter: int = Field(28, ge=1, description="rounds of the simplex search")


class AutoMask3D(_Sub):
    """EMAN2 ``mask.auto3d`` (e2refine ``--automask3d a,b,c,d,e``): the five values in order.

    Accepts a dict, or EMAN2's list of exactly five numbers ``[1.7, 0, 5, 5, 3]``.
    """

    threshold: float = Field(description="density threshold of the seed (map units)")
    radius: float = Field(0.0, ge=0, description="radius of the seed sphere (px; 0: none)")
    nshells: int = Field(5, ge=0, description="dilation shells added to the mask")
    nshellsgauss: int = Field(5, ge=0, description="width of the Gaussian soft edge (px)")
    nmaxseed: int = Field(3, ge=0, description="seed from the n highest voxels (0: none)")

    @model_validator(mode="before")
    @classmethod
    def _five_values(cls, value: Any) -> Any:
        if isinstance(value, str):
            value = [v for v in value.replace(" ", "").split(",") if v]
        if isinstance(value, list | tuple):
            if len(value) != 5:
                raise ValueError(
                    "needs exactly 5 values (threshold, radius, nshells, nshellsgauss, nmaxseed), "
                    f"got {len(value)}"
                )
            keys = ("threshold", "radius", "nshells", "nshellsgauss", "nmaxseed")
            value = dict(zip(keys, value, strict=True))
        return value


class Lowpass(_Sub):
    """A low-pass filter applied to each map after reconstruction."""

    name: Literal["lowpass"] = "lowpass"
    resolution: float = Field(gt=0, description="cut-off (Å)")


def cmp_options(cmp: Any, *, pixel_size: float) -> dict[str, Any]:
    """Keyword options of :func:`emforge.numerics.compare.cost` for a comparator model
    (``snrweight`` is resolved by the caller into an ``snr`` array, and dropped here)."""
    opts = cmp.model_dump(exclude={"name", "snrweight"})
    if cmp.name in ("frc", "phase"):
        opts["pixel_size"] = float(pixel_size)
    return opts


def cmp_param(default: Any, help: str, **kw: Any) -> Any:
    """A comparator param: its help lists the choices (the schema shows a union)."""
    return param(default, help + " (ccc | sqeuclidean | frc | phase, each with its options)", **kw)


_SYM = "Point group (EMAN2 axes): cN, dN, tet, oct, icos"


class ProjectParams(ProtocolParams):
    sym: str = param("c1", _SYM, section="Projection")
    delta: float = param(5.0, "Angular step of the reference projections (EMAN2 orientgen "
                         "eman:delta)", unit="deg", section="Projection", gt=0, le=90)  # fmt: skip
    inc_mirror: bool = param(
        False,
        "Also project the mirror half of the asymmetric unit (off by default: the 2-D aligners "
        "try the mirror instead)",
        section="Projection",
        level=Level.ADVANCED,
    )
    perturb: bool = param(
        True,
        "Jitter the view directions each iteration (N(0, δ/8)), as e2refine's default orientgen",
        section="Projection",
        level=Level.ADVANCED,
    )
    seed: int = param(0, "Random seed (perturbation, random-phase starts)", section="Projection",
                      ge=0)  # fmt: skip


class SimmxParams(ProtocolParams):
    shrink: int = param(0, "Shrink particles and references by this factor for the similarity "
                        "matrix (0 or 1: none)", section="Similarity", ge=0)  # fmt: skip
    twostage: int = param(
        0,
        "Two-stage similarity matrix (e2simmx2stage), value = shrink of the first stage "
        "(typ. 1-3; 0: the full matrix). ~5-10x faster, generally same accuracy",
        section="Similarity",
        ge=0,
    )
    simcmp: Comparator = cmp_param(
        FRC(zeromask=True, snrweight=True), "Comparator of the similarity matrix",
        section="Similarity",
    )  # fmt: skip
    simalign: Aligner = param(Aligner(), "Aligner of particle to projection", section="Similarity")
    simaligncmp: Comparator = cmp_param(CCC(), "Comparator the aligner optimises",
                                    section="Similarity", level=Level.ADVANCED)  # fmt: skip
    simralign: RefineAligner | None = param(
        None, "Refine aligner after the exhaustive one (None: no refinement)",
        section="Similarity", level=Level.ADVANCED,
    )  # fmt: skip
    simraligncmp: Comparator = cmp_param(CCC(), "Comparator the refine aligner optimises",
                                     section="Similarity", level=Level.ADVANCED)  # fmt: skip
    simmask: Literal["none", "auto"] = param(
        "none",
        "Mask both images before scoring: none, or auto (the support of all projections, "
        "EMAN2's simmask.hdf)",
        section="Similarity",
        level=Level.ADVANCED,
    )
    simcandidates: int = param(
        10,
        "Score (simcmp) and refine (simralign) only each particle's k best references by the "
        "aligner's own score; the others get the row's worst score + 1e-4, as e2simmx2stage "
        "fills pairs it skips (0: every pair, EMAN2's exact but ~50x slower matrix). k = 10 "
        "agreed with the full FRC matrix on 86% of particles, k = 30 on 96%",
        section="Similarity",
        ge=0,
        level=Level.ADVANCED,
    )
    prefilt: bool = param(
        False,
        "Filter each reference to match the particle's power spectrum before comparing",
        section="Similarity",
        level=Level.EXPERT,
    )
    chunk: int = param(
        500,
        "Particles per similarity-matrix step (a fixed split: the same results on any executor)",
        section="Execution",
        ge=1,
    )


class ClassifyParams(ProtocolParams):
    sep: int = param(1, "Classes per particle (each particle goes to its `sep` best "
                     "references)", section="Classification", ge=1)  # fmt: skip


class ClassAverageParams(ProtocolParams):
    classiter: int = param(1, "Class-averaging iterations (re-alignment to the average)",
                           section="Class averaging", ge=0, le=20)  # fmt: skip
    classkeep: float = param(
        0.8,
        "Fraction of the particles kept per class (with classkeepsig: the cut-off in σ above "
        "the mean score)",
        section="Class averaging",
        gt=0,
    )
    classkeepsig: bool = param(False, "classkeep is in standard deviations",
                               section="Class averaging")  # fmt: skip
    classcmp: Comparator = cmp_param(FRC(snrweight=True), "Comparator scoring particles against "
                                 "their class average", section="Class averaging")  # fmt: skip
    classalign: Aligner = param(Aligner(), "Aligner of particle to class average",
                                section="Class averaging")  # fmt: skip
    classaligncmp: Comparator = cmp_param(CCC(), "Comparator the aligner optimises",
                                      section="Class averaging", level=Level.ADVANCED)  # fmt: skip
    classralign: RefineAligner | None = param(
        None, "Refine aligner (None: no refinement)", section="Class averaging",
        level=Level.ADVANCED,
    )  # fmt: skip
    classraligncmp: Comparator = cmp_param(CCC(), "Comparator the refine aligner optimises",
                                       section="Class averaging", level=Level.ADVANCED)  # fmt: skip
    classaverager: Literal["mean", "ctf.weight", "ctf.auto"] = param(
        "mean",
        "Averager: mean; ctf.weight (Σ|CTF|·F/ΣCTF² of the phase-flipped images); ctf.auto "
        "(SNR-weighted, Wiener-like); "
        "the ctf ones need CTF columns",
        section="Class averaging",
    )
    classnormproc: Literal["edgemean", "none"] = param(
        "edgemean", "Normalisation of each particle before averaging (normalize.edgemean)",
        section="Class averaging", level=Level.ADVANCED,
    )  # fmt: skip
    classrefsf: bool = param(False, "Filter each average to the reference's structure factor",
                             section="Class averaging", level=Level.EXPERT)  # fmt: skip
    classautomask: bool = param(False, "Automask each class average (mask.auto2d)",
                                section="Class averaging", level=Level.ADVANCED)  # fmt: skip
    classes_per_step: int = param(
        100, "Classes per class-averaging step (a fixed split)", section="Execution", ge=1
    )


class Make3DParams(ProtocolParams):
    pad: int = param(
        0,
        "Box the class averages are zero-padded to before insertion; 0: good_size(1.3·box) "
        "(e2refine_easy's rule; EMAN2.0 did not pad)",
        unit="px",
        section="Reconstruction",
        ge=0,
    )
    recon: Literal["fourier"] = param("fourier", "Reconstructor (direct Fourier insertion)",
                                      section="Reconstruction", level=Level.ADVANCED)  # fmt: skip
    m3dkeep: float = param(0.8, "Fraction of class averages kept, by quality (with m3dkeepsig: "
                           "σ)", section="Reconstruction", gt=0)  # fmt: skip
    m3dkeepsig: bool = param(False, "m3dkeep is in standard deviations", section="Reconstruction")
    m3diter: int = param(2, "Reconstruction passes (iterative refinement of the slices)",
                         section="Reconstruction", ge=1, le=10)  # fmt: skip
    m3dpreprocess: Literal["edgemean", "none"] = param(
        "edgemean", "Per-average preprocessing: subtract the edge mean (normalize.edgemean)",
        section="Reconstruction", level=Level.ADVANCED,
    )  # fmt: skip
    m3dpostprocess: Lowpass | None = param(
        None, "Filter applied to each reconstruction (None: none)", section="Reconstruction",
        level=Level.ADVANCED,
    )  # fmt: skip


class LoopParams(ProtocolParams):
    iter: int = param(6, "Number of iterations", section="Refinement", ge=1, le=99)
    startiter: int = param(
        1,
        "First iteration to run (1: from the start). k > 1 re-enters an existing run at "
        "iteration k, seeded by iteration k-1's filtered maps (else its raw maps): "
        "`emforge runs edit RUN -p startiter=k`, then `runs resume`",
        section="Refinement",
        ge=1,
    )
    goldstandard: bool = param(
        True,
        "Gold standard (ON by default): even/odd halves refined independently from "
        "independent random-phase starts (EMAN2.1+); off: both halves use references "
        "projected from the combined map (EMAN2.0 style, resolution exaggerated)",
        section="Refinement",
    )
    targetres: float = param(
        25.0,
        "Target resolution: sets the random-phase start (1.2-2x beyond it) and the band of the "
        "Wiener filter",
        unit="Å",
        section="Refinement",
        gt=0,
    )
    automask3d: AutoMask3D | None = param(
        None,
        "Automask of each iteration's map (threshold, radius, nshells, nshellsgauss, nmaxseed; "
        "EMAN2's five values); None: the postprocess default mask. Applied with or without mass",
        section="Masking",
    )
    mass: float = param(0.0, "Particle mass; > 0 normalises each filtered map so that this mass "
                        "encloses density 1 (normalize.bymass)", unit="kDa", section="Masking",
                        ge=0)  # fmt: skip
    apix: float = param(0.0, "Pixel size; 0: the particles' own", unit="Å", section="Refinement",
                        ge=0, level=Level.ADVANCED)  # fmt: skip
