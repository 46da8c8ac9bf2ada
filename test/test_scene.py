"""The poster renderer and the goal-image perturbations."""
import importlib.util
import os

import cv2
import numpy as np
import pytest

from latent_vs.camera import Camera, default_camera
from latent_vs.geometry import pose_to_matrix
from latent_vs.scene import Scene, SceneConfig, SceneError, goal_pose, lighting, noise, occlusion, perturb_goal


def camera_at(x, y, z, thetau=(0.0, 0.0, 0.0)):
    return pose_to_matrix(np.array([x, y, z, *thetau], float))


@pytest.fixture
def white_scene(tmp_path):
    """A uniformly white poster on a black background: its outline is easy to predict."""
    path = tmp_path / "white.png"
    cv2.imwrite(str(path), np.full((60, 80), 255, np.uint8))
    return Scene(SceneConfig(texture=str(path)), default_camera())


def test_default_scene_renders_the_poster_at_the_goal():
    sc = Scene()
    img = sc.render(goal_pose())
    assert img.shape == (224, 224) and img.dtype == np.uint8
    assert img.std() > 10  # a textured photograph fills the view
    assert (img == sc.config.background).mean() < 0.01


def test_poster_outline_matches_the_pinhole_projection(white_scene):
    # camera 1.5 m in front of the poster centre: the poster spans u0 ± px·0.4/1.5, v0 ± py·0.3/1.5
    img = white_scene.render(camera_at(0, 0, -1.5))
    cam = white_scene.camera
    u_lo, u_hi = cam.u0 - cam.px * 0.4 / 1.5, cam.u0 + cam.px * 0.4 / 1.5
    v_lo, v_hi = cam.v0 - cam.py * 0.3 / 1.5, cam.v0 + cam.py * 0.3 / 1.5
    cols = np.flatnonzero(img[int(cam.v0)] > 127)
    rows = np.flatnonzero(img[:, int(cam.u0)] > 127)
    assert abs(cols[0] - u_lo) <= 1 and abs(cols[-1] - u_hi) <= 1
    assert abs(rows[0] - v_lo) <= 1 and abs(rows[-1] - v_hi) <= 1


def test_homography_maps_texture_corners_to_projected_poster_corners(white_scene):
    T = camera_at(0.05, -0.02, -0.9, (0.1, -0.05, 0.3))
    H = white_scene.homography(T)
    tw, th = white_scene.texture.shape[1], white_scene.texture.shape[0]
    # texture pixel centres (0, 0) and (tw-1, th-1) are half a texel inside the poster corners
    T_co = np.linalg.inv(T)
    for (c, r) in ((0, 0), (tw - 1, th - 1)):
        X = np.array([-0.4 + (c + 0.5) * 0.8 / tw, -0.3 + (r + 0.5) * 0.6 / th, 0.0, 1.0])
        Xc = T_co @ X
        expected = white_scene.camera.K @ (Xc[:3] / Xc[2])
        got = H @ np.array([c, r, 1.0])
        assert np.allclose(got[:2] / got[2], expected[:2], atol=1e-6)


@pytest.mark.parametrize("T", [
    camera_at(0, 0, 0.6),                      # behind the poster, looking away from it
    camera_at(0, 0, -0.6, (np.pi, 0, 0)),      # in front of it, facing away (the poster is behind)
    camera_at(5.0, 0, -0.6),                   # far to the side: off view
    camera_at(0, 0, 0.0),                      # in the poster plane: edge-on
])
def test_poster_not_in_view_gives_background(T):
    sc = Scene(SceneConfig(background=17))
    img = sc.render(T)
    assert np.all(img == 17)


def test_rays_meeting_the_plane_behind_the_camera_see_background(tmp_path):
    # a large white poster, camera tilted 80° so the horizon crosses the view: every pixel is white
    # exactly when its ray meets the plane in front of the camera, inside the poster
    path = tmp_path / "white.png"
    cv2.imwrite(str(path), np.full((60, 60), 255, np.uint8))
    cfg = SceneConfig(texture=str(path), width_m=4.0, height_m=4.0)
    sc = Scene(cfg, default_camera(112))
    T = camera_at(0, 0.2, -0.15, (np.radians(80), 0, 0))
    img = sc.render(T)
    x, y = sc.camera.normalized_grid()
    d = np.stack([x, y, np.ones_like(x)], -1) @ T[:3, :3].T        # rays in the scene frame
    with np.errstate(divide="ignore"):
        lam = -T[2, 3] / d[..., 2]
    p = T[:3, 3] + lam[..., None] * d
    expected = (lam > 0) & (np.abs(p[..., 0]) < 2.0) & (np.abs(p[..., 1]) < 2.0)
    assert 0.2 < expected.mean() < 0.8
    assert ((img > 127) == expected).mean() > 0.98


def test_scaled_camera_renders_the_same_view():
    T = camera_at(0.04, 0.03, -0.7, (0.05, 0.1, 0.4))
    big = Scene(camera=default_camera(224)).render(T)
    small = Scene(camera=default_camera(112)).render(T)
    down = cv2.resize(big, (112, 112), interpolation=cv2.INTER_AREA)
    assert np.abs(down.astype(float) - small).mean() < 6.0
    cam = default_camera(224).scaled(112)
    assert cam == default_camera(112) and cam.px == 150.0


def test_render_batch_matches_render():
    sc = Scene(camera=default_camera(64))
    Ts = np.stack([camera_at(0, 0, -0.6), camera_at(0.1, 0, -0.5, (0, 0.2, 0))])
    batch = sc.render_batch(Ts)
    assert batch.shape == (2, 64, 64)
    assert np.array_equal(batch[1], sc.render(Ts[1]))


def test_missing_texture_is_a_user_error(tmp_path):
    with pytest.raises(SceneError, match="not found"):
        Scene(SceneConfig(texture=str(tmp_path / "nope.png")))
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"not an image")
    with pytest.raises(SceneError, match="not a readable image"):
        Scene(SceneConfig(texture=str(bad)))


@pytest.mark.parametrize("fn", [lighting, occlusion, noise, perturb_goal])
def test_perturbations_are_seeded_and_change_the_image(fn):
    img = Scene().render(goal_pose())
    a = fn(img, np.random.default_rng(3))
    b = fn(img, np.random.default_rng(3))
    c = fn(img, np.random.default_rng(4))
    assert a.shape == img.shape and a.dtype == np.uint8
    assert np.array_equal(a, b)
    assert not np.array_equal(a, img)
    assert not np.array_equal(a, c)


def test_perturbed_goal_stays_recognisable():
    img = Scene().render(goal_pose()).astype(float)
    pert = perturb_goal(img.astype(np.uint8), np.random.default_rng(0)).astype(float)
    assert 1.0 < np.abs(pert - img).mean() < 80.0


def test_scene_config_round_trip():
    cfg = SceneConfig(width_m=1.0, background=3)
    assert SceneConfig.from_dict({**cfg.to_dict(), "unknown": 1}) == cfg
    assert np.allclose(goal_pose(cfg)[:3, 3], [0, 0, -0.6])
    assert Camera.from_dict(default_camera(64).to_dict()) == default_camera(64)


def test_an_independent_ray_cast_renderer_sees_the_same_images():
    """scripts/renderer_check.py's renderer (one ray per pixel onto the plane, the poster file
    sampled at its own resolution) agrees with the homography renderer on where the poster is
    and what it looks like: the two differ only in texture resampling, by 1-2 grey levels (a
    half-pixel shift of either would make it 2.6-3.4)."""
    root = os.path.join(os.path.dirname(__file__), "..")
    spec = importlib.util.spec_from_file_location("renderer_check", os.path.join(root, "scripts", "renderer_check.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    cfg, cam = SceneConfig(), default_camera()
    ours, ray = Scene(cfg, cam), mod.RayCastScene(cfg, cam)
    for T in (goal_pose(cfg), camera_at(0.05, -0.03, -0.5, (0.2, -0.1, 0.6)), camera_at(0.35, 0.25, -0.45, (0.1, -0.2, 0.3))):
        a, b = ours.render(T).astype(float), ray.render(T).astype(float)
        assert abs(a.mean() - b.mean()) < 0.1
        assert np.abs(a - b).mean() < 2.3
        assert ((a == 0) == (b == 0)).mean() > 0.998  # the poster's outline (background 0) agrees
