import io
import tarfile

from farm.client import pack_folder


def names(archive: bytes) -> list[str]:
    return sorted(tarfile.open(fileobj=io.BytesIO(archive)).getnames())


def make_tree(root):
    (root / "data").mkdir()
    (root / "data/big.bin").write_text("x" * 1000)
    (root / ".git").mkdir()
    (root / ".git/config").write_text("[core]")
    (root / "svc").mkdir()
    (root / "svc/main.txt").write_text("svc")
    (root / ".dockerignore").write_text("# comment\ndata/\n")
    (root / "Dockerfile").write_text("FROM scratch\n")
    (root / "Dockerfile.root").write_text("FROM scratch\n")


def test_packing_leaves_out_what_dockerignore_and_git_leave_out(tmp_path):
    make_tree(tmp_path)
    packed = names(pack_folder(tmp_path))
    assert "data/big.bin" not in packed and ".git/config" not in packed
    assert {"Dockerfile", "svc/main.txt", ".dockerignore"} <= set(packed)


def test_a_subfolder_context_packs_it_and_the_dockerfile_only(tmp_path):
    make_tree(tmp_path)
    packed = names(
        pack_folder(tmp_path, context="svc", dockerfile="../Dockerfile.root")
    )
    assert packed == ["Dockerfile.root", "svc", "svc/main.txt"]


def test_the_same_files_pack_to_the_same_bytes(tmp_path):
    make_tree(tmp_path)
    assert pack_folder(tmp_path) == pack_folder(tmp_path)


def test_symbolic_links_are_packed_as_links(tmp_path):
    make_tree(tmp_path)
    (tmp_path / "svc/alias.txt").symlink_to("main.txt")
    (tmp_path / "outside").symlink_to("/etc/passwd")
    with tarfile.open(fileobj=io.BytesIO(pack_folder(tmp_path))) as archive:
        alias = archive.getmember("svc/alias.txt")
        assert alias.issym() and alias.linkname == "main.txt"
        # Packed as it is: the farm refuses a link leading out, saying which.
        assert archive.getmember("outside").issym()
