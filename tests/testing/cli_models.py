"""Models for the `inferkit serve` tests (loaded as module:callable)."""

from inferkit.testing.models import add_sub_model, identity_model


def make_models():
    return [add_sub_model(), identity_model("echo", "INT64")]


single = identity_model("single", "FP32")


def double(inputs, parameters):
    return {"y": inputs["x"] * 2}
