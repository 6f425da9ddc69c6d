"""A run's raw files (docs/methodology.md "The results directory"): loadgen's reports, the
servers' and loadgen's logs, microbench's JSON and the peers' configs. The matrix writes
them under OUT/raw/ as it goes and packs them into one archive, OUT/raw.tar.xz, when it
ends or is interrupted. Readers take a file from raw/ where it is there (a run in
progress) and from the archive otherwise, by the same name: raw/NAME, as results.csv's
`json` column gives it."""
import shutil
import tarfile
from pathlib import Path

DIRECTORY = "raw"
ARCHIVE = "raw.tar.xz"


def pack(results_dir):
    """Packs results_dir/raw/ into results_dir/raw.tar.xz (members raw/..., sorted) and
    removes raw/. The members of an archive already there that raw/ does not replace are
    kept: a second run into the same directory adds to the first's, as it did in raw/.
    Returns the archive's path, or None when there is neither raw/ nor an archive."""
    out = Path(results_dir)
    raw, archive = out / DIRECTORY, out / ARCHIVE
    if not raw.is_dir():
        return archive if archive.exists() else None
    files = sorted(raw.rglob("*"))
    names = {str(p.relative_to(out)) for p in files}
    partial = archive.with_name(ARCHIVE + ".partial")  # an interrupted pack leaves raw/ whole
    with tarfile.open(partial, "w:xz") as tar:
        if archive.exists():
            with tarfile.open(archive) as old:
                for member in old:
                    if member.name not in names:
                        tar.addfile(member, old.extractfile(member) if member.isfile() else None)
        for p in files:
            tar.add(p, arcname=str(p.relative_to(out)), recursive=False)
    partial.replace(archive)
    shutil.rmtree(raw)
    return archive


class RawFiles:
    """The raw files of one results directory, wherever they are: raw/ first, then the
    archive. Names are relative to the results directory (raw/NAME)."""

    def __init__(self, results_dir):
        self.dir = Path(results_dir)
        self._tar = None

    def __enter__(self):
        return self

    def __exit__(self, *_exc):
        self.close()

    def close(self):
        if self._tar:
            self._tar.close()
            self._tar = None

    def _archive(self):
        if self._tar is None and (self.dir / ARCHIVE).is_file():
            self._tar = tarfile.open(self.dir / ARCHIVE)
        return self._tar

    def names(self):
        """Every file's name, sorted (the archive's order: reading in it never rewinds)."""
        names = set()
        if (self.dir / DIRECTORY).is_dir():
            names |= {str(p.relative_to(self.dir)) for p in (self.dir / DIRECTORY).rglob("*") if p.is_file()}
        if self._archive():
            names |= {m.name for m in self._tar.getmembers() if m.isfile()}
        return sorted(names)

    def read_bytes(self, name):
        path = self.dir / name
        if path.is_file():
            return path.read_bytes()
        member = None
        if self._archive():
            try:
                member = self._tar.getmember(name)
            except KeyError:
                pass
        if member is None or not member.isfile():
            raise FileNotFoundError(f"{name}: neither in {self.dir} nor in {self.dir / ARCHIVE}")
        return self._tar.extractfile(member).read()

    def read_text(self, name):
        return self.read_bytes(name).decode()


def read_bytes(path):
    """A file by its path as it was written, RESULTS_DIR/raw/NAME: from raw/ or, once packed,
    from RESULTS_DIR/raw.tar.xz."""
    path = Path(path)
    if path.is_file():
        return path.read_bytes()
    raw = next((p for p in path.parents if p.name == DIRECTORY), None)
    if raw is None:
        raise FileNotFoundError(f"{path}: no such file, and not under a results directory's {DIRECTORY}/")
    with RawFiles(raw.parent) as files:
        return files.read_bytes(str(path.relative_to(raw.parent)))
