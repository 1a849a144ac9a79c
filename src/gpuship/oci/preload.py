"""Load an image's lower layers into a container engine while its upper layers are still being built.

A cold build of a GPU image spends about as long in ``docker load`` (the engine unpacks and registers 5+ GB) as
in making the layers, and the layers are final bottom-up long before the image is: the base's floor first, then
each layer of the Python environment as it is installed and pruned. :class:`Preloader` takes them in image order
and, on a thread of its own, loads each new run of them into the engine as an untagged *prefix image* (a config
that lists only those layers), sending only the layers the engine lacks. When the image is written, the engine
holds its lower layers under the same chain IDs, so :func:`~gpuship.oci.engine.load_image` sends only the rest;
then the prefix images go (the image holds their layers).

A preload never decides what the image is: if it fails, or the image turns out not to start with the layers it
loaded, the final load sends what the engine lacks, as it would have anyway. Only for Docker's classic image
store (whose ``docker load`` skips held chain prefixes); elsewhere it does nothing.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor

from .. import tools
from ..errors import GpushipError
from .engine import chain_ids, engine_run, held_chain_ids, image_store, omittable, stream_load
from .image import Image, ImageConfig, Platform, append_layers, empty_image
from .layer import Layer

#: The label of a prefix image (``docker images --filter label=...`` finds one a killed build left behind).
PREFIX_LABEL = "io.gpuship.prefix"

#: Below this many bytes that the engine lacks, a run of layers waits to be loaded with the next one (each load
#: costs the engine a fixed ~0.1-0.3 s).
MIN_BYTES = 64 << 20


class Preloader:
    """Loads the lower layers of one image into ``engine`` ahead of the image (see the module doc).

    ``floor()`` gives the layers the image starts with, found on the preloader's thread; :meth:`add` gives the ones
    above them, in order, as each is final. :meth:`finish` waits for the load under way and starts no other (call
    it before the image itself is loaded); :meth:`close` removes the prefix images. ``say`` hears why preloading
    stopped, when it did.
    """

    def __init__(
        self,
        platform: Platform,
        floor: Callable[[], Sequence[Layer]],
        *,
        engine: str = "docker",
        say: Callable[[str], None] = lambda _: None,
        min_bytes: int = MIN_BYTES,
    ) -> None:
        self.platform = platform
        self._exe = tools.require(engine)
        self._say = say
        self._min_bytes = min_bytes
        self._lock = threading.Lock()
        self._floor: list[Layer] | None = None
        self._floor_known = threading.Event()
        self._above: list[Layer] = []
        self._held: set[str] = set()  # the chain IDs the engine holds: asked once, then what was loaded
        self._loaded: list[str] = []  # prefix image IDs
        #: what the preloads sent: layers and bytes
        self.sent_layers = 0
        self.sent_bytes = 0
        self._running = False
        self._stopped = False
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="gpuship-preload")
        self._pool.submit(self._start, floor, engine)

    def floor_known(self) -> None:
        """Wait until the floor is known (its layers are made on the preloader's thread: the caller may make the
        same ones next, and should not race it)."""
        self._floor_known.wait()

    def add(self, layers: Sequence[Layer]) -> None:
        """The next layers of the image, bottom up; loaded soon, when they and those below add up."""
        with self._lock:
            if self._stopped:
                return
            self._above.extend(layers)
            if self._floor is not None and not self._running:
                self._running = True
                self._pool.submit(self._load_runs)

    def settle(self) -> None:
        """Wait until what was added so far is loaded, or judged too small to load yet."""
        with self._lock:
            if self._stopped:
                return
            waiting = self._pool.submit(lambda: None)  # the pool runs one task at a time, in order
        waiting.result()

    def finish(self) -> None:
        """Start no other load, and wait for the one under way."""
        with self._lock:
            self._stopped = True
        self._floor_known.wait()
        self._pool.shutdown(wait=True)

    def describe(self) -> str:
        """What went to the engine ahead of the image (empty when nothing did)."""
        if not self.sent_layers:
            return ""
        return f"{self.sent_layers} layers ({self.sent_bytes / 1e6:.1f} MB) loaded ahead while building"

    def close(self) -> None:
        """:meth:`finish`, then remove the prefix images (the image loaded meanwhile holds their layers)."""
        self.finish()
        if self._loaded:
            engine_run(self._exe, "rmi", *self._loaded)
            self._loaded.clear()

    # -- on the preloader's thread ---------------------------------------------------------------------------
    def _start(self, floor: Callable[[], Sequence[Layer]], engine: str) -> None:
        try:
            layers = list(floor())
            store = image_store(engine)
            held = held_chain_ids(self._exe) if store == "classic" else set()
        except GpushipError as exc:
            self._stop(f"loading ahead into {engine} is off: {exc.line()}")
            return
        finally:
            self._floor_known.set()
        if store != "classic":
            self._stop("")
            return
        with self._lock:
            self._floor, self._held = layers, held
            self._running = True
        self._load_runs()

    def _load_runs(self) -> None:
        try:
            while True:
                with self._lock:
                    chain = [*(self._floor or []), *self._above]
                    if self._stopped or not self._worth_loading(chain):
                        self._running = False
                        return
                self._load(chain)
        except GpushipError as exc:
            self._stop(f"loading ahead stopped ({exc.line()}); the image goes in one piece")
        except BaseException:
            self._stop("")
            raise

    def _worth_loading(self, chain: list[Layer]) -> bool:
        ids = chain_ids([layer.diff_id for layer in chain])
        lacking = sum(layer.uncompressed_size for layer, c in zip(chain, ids, strict=True) if c not in self._held)
        return lacking > 0 and lacking >= self._min_bytes

    def _load(self, chain: list[Layer]) -> None:
        image = prefix_image(self.platform, chain)
        omit = omittable(image, self._held)  # only a held prefix may be left out
        sending = chain[len(omit) :]
        self._say(
            f"loading {len(sending)} layers into the engine ahead of the image "
            f"({sum(layer.uncompressed_size for layer in sending) / 1e6:.0f} MB)"
        )
        stream_load(self._exe, image, None, None, omit=omit)
        self._loaded.append(image.config_descriptor()["digest"])
        self.sent_layers += len(sending)
        self.sent_bytes += sum(layer.uncompressed_size for layer in sending)
        self._held.update(chain_ids([layer.diff_id for layer in chain]))

    def _stop(self, why: str) -> None:
        with self._lock:
            self._stopped = True
            self._running = False
        if why:
            self._say(why)


def prefix_image(platform: Platform, layers: Sequence[Layer]) -> Image:
    """The untagged image a preload loads: ``layers`` and a config that says only what they are for."""
    base = empty_image(platform, ImageConfig(labels={PREFIX_LABEL: "layers loaded ahead of an image"}))
    return append_layers(base, layers, created_by="gpuship: loaded ahead")
