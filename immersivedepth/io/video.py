"""H.264 MP4 videos written atomically, and their frame count / size / rate."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from immersivedepth.io.atomic import atomic_path
from immersivedepth.io.common import PathLike, require_file


class VideoWriter:
    """H.264 (yuv420p) MP4 writer: ``with VideoWriter("out.mp4", fps=30) as vw: vw.write(frame)``.

    Frames are (H,W,3) float in [0,1] or uint8 (gray/RGBA accepted); all frames must share one size. Odd sizes are
    padded to even by edge replication. Frames go to ``<stem>.partial<suffix>`` beside the target, renamed onto
    it on a clean exit; an exception (or zero frames) leaves no video.
    """

    def __init__(self, path: PathLike, fps: float = 30, *, codec: str = "libx264", pixelformat: str = "yuv420p",
                 quality: float | None = 8, ffmpeg_log_level: str = "error"):
        self.path = Path(path)
        self.options = dict(fps=fps, codec=codec, pixelformat=pixelformat, quality=quality, macro_block_size=1,
                            ffmpeg_log_level=ffmpeg_log_level)
        self.size: tuple[int, int] | None = None
        self.n_frames = 0
        self._writer = None
        self.partial_path = self.path.with_name(f"{self.path.stem}.partial{self.path.suffix}")
        self._target = None  # the atomic_path context while open

    def __enter__(self) -> VideoWriter:
        self._target = atomic_path(self.path, temp_name=self.partial_path.name)
        self._target.__enter__()
        return self

    def _prepare(self, frame: np.ndarray) -> np.ndarray:
        frame = np.asarray(frame)
        if frame.ndim == 2:
            frame = frame[..., None]
        if frame.ndim != 3 or frame.shape[2] not in (1, 3, 4):
            raise ValueError(f"video {self.path}: frame shape {frame.shape}; expected (H,W,3)")
        frame = np.repeat(frame, 3, axis=2) if frame.shape[2] == 1 else frame[..., :3]
        if frame.dtype != np.uint8:
            frame = np.round(np.clip(np.nan_to_num(frame.astype(np.float64)), 0, 1) * 255).astype(np.uint8)
        if self.size is None:
            self.size = frame.shape[:2]
        elif frame.shape[:2] != self.size:
            raise ValueError(f"video {self.path}: frame {self.n_frames} is {frame.shape[1]}x{frame.shape[0]} but the "
                             f"first frame was {self.size[1]}x{self.size[0]}; all frames must have one size")
        h, w = frame.shape[:2]
        return np.pad(frame, ((0, h % 2), (0, w % 2), (0, 0)), mode="edge")

    def write(self, frame: np.ndarray) -> None:
        """Append one frame (H,W,3) float [0,1] or uint8."""
        if self._target is None:
            raise RuntimeError(f"VideoWriter({self.path}) must be used as a context manager: `with VideoWriter(..)`")
        frame = self._prepare(frame)
        if self._writer is None:
            import imageio.v2 as imageio

            self._writer = imageio.get_writer(str(self.partial_path), format="FFMPEG", mode="I", **self.options)
        self._writer.append_data(frame)
        self.n_frames += 1

    def __exit__(self, exc_type, exc, tb) -> bool:
        target, self._target = self._target, None
        try:
            if self._writer is not None:
                self._writer.close()
            if exc_type is None and self.n_frames == 0:
                raise ValueError(f"no frames were written to video {self.path}; nothing saved")
        except BaseException as err:
            target.__exit__(type(err), err, err.__traceback__)  # removes the partial file
            raise
        target.__exit__(exc_type, exc, tb)
        return False


def read_video_info(path: PathLike) -> tuple[int, int, int, float]:
    """-> (n_frames, height, width, fps) of a video file (decodes it to count frames)."""
    import imageio.v2 as imageio

    path = require_file(path, "video")
    with imageio.get_reader(str(path), format="FFMPEG") as reader:
        meta = reader.get_meta_data()
        width, height = meta["size"]
        return reader.count_frames(), int(height), int(width), float(meta["fps"])
