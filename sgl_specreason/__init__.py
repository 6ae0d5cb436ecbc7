"""SpecReason (speculative reasoning) on SGLang: the machinery behind the programs in ``sgl_specreason.programs``."""

from sgl_specreason.calls import Role
from sgl_specreason.config import SpecReasonConfig
from sgl_specreason.errors import ConfigError, InputError, SpecReasonError
from sgl_specreason.problems import Problem, make_problem
from sgl_specreason.rendering import model_template
from sgl_specreason.templates import TEMPLATES, template_for_model

__all__ = [
    "Role", "SpecReasonConfig", "ConfigError", "InputError", "SpecReasonError", "Problem",
    "make_problem", "model_template", "TEMPLATES", "template_for_model",
]
__version__ = "0.1.0"
