"""Model directories: export/load round trips, and clear errors that name the broken file."""
import json
import os

import numpy as np
import pytest
import torch

from latent_vs.camera import default_camera
from latent_vs.errors import UserError
from latent_vs.learning.export import ModelError, export_model, load_model
from latent_vs.learning.nets import ImageEncoder, PoseNet, normalise_images
from latent_vs.scene import DEFAULT_TEXTURE, Scene, SceneConfig, goal_pose


def _meta(size=64, D=32, texture=DEFAULT_TEXTURE):
    scene = SceneConfig(texture=texture)
    return {"name": "t", "latent_dim": D,
            "image": {"size": size, "channels": 1, "mean": 0.5, "std": 0.25},
            "camera": default_camera(size).to_dict(), "scene": scene.to_dict(),
            "goal_pose": goal_pose(scene).tolist(), "w_t": 0.4, "w_r": 0.9}


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    torch.manual_seed(0)
    psi, phi = ImageEncoder(10, 4, 64), PoseNet()
    with torch.no_grad():
        for m in psi.modules():
            if hasattr(m, "parametrizations"):
                m.parametrizations.weight.original0.normal_(1.0, 0.2)
    out = str(tmp_path_factory.mktemp("models") / "t")
    export_model(out, psi, phi, _meta())
    return out, psi, phi


def test_round_trip_same_embeddings(exported):
    out, psi, phi = exported
    assert sorted(os.listdir(out)) == ["meta.json", "phi.pt", "psi.pt"]
    m = load_model(out)
    img = Scene(m.scene, m.camera).render(m.goal_pose @ np.diag([1, 1, 1, 1.0]))
    z = m.encode(img[None])
    with torch.no_grad():
        ref = psi(normalise_images(torch.from_numpy(img))[None, None]).numpy()
    np.testing.assert_allclose(z, ref, rtol=1e-4, atol=1e-5)
    r = np.random.default_rng(0).normal(size=(5, 6)).astype(np.float32)
    with torch.no_grad():
        np.testing.assert_allclose(m.embed_poses(r), phi(torch.from_numpy(r)).numpy(), rtol=1e-5, atol=1e-6)
    assert m.latent_dim == 32 and m.w_t == 0.4 and m.camera.width == 64
    assert m.scene.texture == DEFAULT_TEXTURE and os.path.isfile(m.scene.texture)
    assert m.meta["format_version"] == 1 and m.meta["benchmark"] == {} and m.meta["git_commit"]


def test_encode_any_image_size(exported):
    m = load_model(exported[0])
    big = Scene(m.scene, default_camera(224)).render(m.goal_pose)
    wide = np.zeros((120, 200), np.uint8)
    wide[:, 40:160] = 255
    z_big, z_small = m.encode(big), m.encode(Scene(m.scene, m.camera).render(m.goal_pose))
    assert m.encode(wide).shape == (1, 32)
    # the same view at 224 px, shrunk to 64, gives nearly the same latent as a 64-px render
    assert np.linalg.norm(z_big - z_small) < 0.1 * (np.linalg.norm(z_small) + 1e-6) + 0.05


def test_own_texture_is_copied_into_the_model(tmp_path):
    import cv2
    tex = tmp_path / "my_scene.jpg"
    cv2.imwrite(str(tex), (np.random.default_rng(0).random((60, 80)) * 255).astype(np.uint8))
    out = tmp_path / "own"
    export_model(str(out), ImageEncoder(10, 4, 64), PoseNet(), _meta(texture=str(tex)))
    tex.unlink()  # the model directory does not need the original any more
    m = load_model(str(out))
    assert os.path.dirname(m.scene.texture) == str(out) and os.path.isfile(m.scene.texture)


def test_errors_name_the_file(exported, tmp_path):
    import shutil
    src = exported[0]
    with pytest.raises(ModelError, match="not found"):
        load_model(str(tmp_path / "nope"))
    bad = tmp_path / "bad"
    shutil.copytree(src, bad)
    os.remove(bad / "phi.pt")
    with pytest.raises(ModelError, match=r"phi\.pt"):
        load_model(str(bad))
    shutil.rmtree(bad)
    shutil.copytree(src, bad)
    (bad / "meta.json").write_text("{ not json")
    with pytest.raises(ModelError, match=r"meta\.json"):
        load_model(str(bad))
    meta = json.loads((tmp_path / "x.json").write_text("") or open(os.path.join(src, "meta.json")).read())
    meta["format_version"] = 99
    (bad / "meta.json").write_text(json.dumps(meta))
    with pytest.raises(ModelError, match=r"meta\.json.*format_version"):
        load_model(str(bad))
    del meta["format_version"]              # the first model directories: version 1
    (bad / "meta.json").write_text(json.dumps(meta))
    assert load_model(str(bad)).meta["format_version"] == 1
    meta["format_version"] = 1
    meta["latent_dim"] = 16  # shape mismatch with the networks
    (bad / "meta.json").write_text(json.dumps(meta))
    with pytest.raises(ModelError, match=r"psi\.pt.*latent_dim 16"):
        load_model(str(bad))
    (bad / "psi.pt").write_bytes(b"garbage")
    with pytest.raises(ModelError, match=r"psi\.pt"):
        load_model(str(bad))
    assert issubclass(ModelError, UserError)


def test_export_refuses_shape_mismatch(tmp_path):
    with pytest.raises(ValueError):
        export_model(str(tmp_path / "m"), ImageEncoder(10, 4, 64, latent_dim=8), PoseNet(), _meta())
    assert not (tmp_path / "m").exists()  # nothing half-written
