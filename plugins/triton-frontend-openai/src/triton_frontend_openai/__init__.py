"""An OpenAI-compatible frontend for triton-kernel, as a ``kernel.frontends`` plugin.

``pip install triton-frontend-openai`` and ``kernel serve --openai-port 9000`` serve
``/v1/models``, ``/v1/completions`` and ``/v1/chat/completions`` (streaming or not) on any text
model of the repository: decoupled models stream a chunk per response, others answer once. How
a request maps to a model's tensors is set by the model's ``config.pbtxt`` parameters
(``openai_prompt_input``, ``openai_text_output``, ...: see docs/openai.md).
"""

from triton_frontend_openai._frontend import OpenAIFrontend as OpenAIFrontend
from triton_frontend_openai._frontend import OpenAIFrontendPlugin as OpenAIFrontendPlugin

__all__ = ["OpenAIFrontend", "OpenAIFrontendPlugin"]
