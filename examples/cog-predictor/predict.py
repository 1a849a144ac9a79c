"""A small Cog predictor: summary statistics of a list of numbers, with numpy (loaded once, in setup)."""

from cog import BasePredictor, Input


class Predictor(BasePredictor):
    def setup(self) -> None:
        import numpy

        self.np = numpy

    def predict(
        self,
        values: str = Input(description="comma-separated numbers"),
        scale: float = Input(description="multiply every value first", default=1.0),
    ) -> str:
        x = self.np.array([float(v) for v in values.split(",")]) * scale
        return f"n={x.size} mean={x.mean():.3f} max={x.max():.3f}"
