"""Triton adapter for edgectl.runtime.tokenization.Preprocessor."""

from pathlib import Path

import numpy as np
import triton_python_backend_utils as pb_utils

from edgectl.runtime.contract import InvalidRequest
from edgectl.runtime.rag import RagBudget, RagPreprocessor, load_template
from edgectl.runtime.tokenization import PreprocessLimits, Preprocessor
from edgectl.runtime.triton_io import model_parameters, scalar, strings, text_list


def _input(request, name):
    tensor = pb_utils.get_input_tensor_by_name(request, name)
    return None if tensor is None else tensor.as_numpy()


class TritonPythonModel:
    def initialize(self, args):
        params = model_parameters(args)
        limits = PreprocessLimits(int(params["max_input_len"]), int(params["max_output_len"]))
        self.pre = Preprocessor.from_dir(
            Path(params["tokenizer_dir"]), limits, int(params["end_id"]), int(params["pad_id"])
        )
        self.rag = RagPreprocessor(
            load_template(Path(args["model_repository"]), params.get("rag_template", "zero_shot")),
            RagBudget(limits.max_input_len, int(params.get("rag_reserve_tokens", "0") or 0)),
            self.pre.encode_prompt,
            self.pre._encode,
        )

    def _rag(self, request, query, max_tokens, apply_chat_template):
        """The RAG prompt when the request carries rag_passages or rag_question."""
        passages = _input(request, "RAG_PASSAGES")
        question = _input(request, "RAG_QUESTION")
        if passages is None and question is None:
            return None
        questions = text_list(question, "rag_question") if question is not None else [query]
        if len(questions) != 1:
            raise InvalidRequest(f"rag_question must hold exactly one string, got {len(questions)}")
        chat = True if apply_chat_template is None else apply_chat_template
        return self.rag.prompt(text_list(passages, "rag_passages"), questions[0], max_tokens, chat)

    def _prepare(self, request):
        query = strings(_input(request, "QUERY"))
        if len(query) != 1:
            raise InvalidRequest(f"text_input must hold exactly one string, got {len(query)}")
        max_tokens = scalar(_input(request, "REQUEST_OUTPUT_LEN"), "max_tokens", int, None)
        chat = scalar(_input(request, "APPLY_CHAT_TEMPLATE"), "apply_chat_template", bool, None)
        rag = self._rag(request, query[0], max_tokens, chat)
        tensors = self.pre.prepare(
            query[0],
            max_tokens=max_tokens,
            stop_words=strings(_input(request, "STOP_WORDS_DICT")),
            bad_words=strings(_input(request, "BAD_WORDS_DICT")),
            end_id=scalar(_input(request, "END_ID"), "end_id", int, None),
            pad_id=scalar(_input(request, "PAD_ID"), "pad_id", int, None),
            apply_chat_template=bool(chat),
            prompt_ids=None if rag is None else rag.ids,
        )
        tensors["RAG_PASSAGES_DROPPED"] = np.asarray([rag.passages_dropped if rag else 0], np.int32)
        tensors["RAG_TOKENS_DROPPED"] = np.asarray([rag.tokens_dropped if rag else 0], np.int32)
        return pb_utils.InferenceResponse(
            output_tensors=[
                pb_utils.Tensor(name, np.expand_dims(value, 0)) for name, value in tensors.items()
            ]
        )

    def execute(self, requests):
        responses = []
        for request in requests:
            try:
                responses.append(self._prepare(request))
            except InvalidRequest as err:
                error = pb_utils.TritonError(str(err), pb_utils.TritonError.INVALID_ARG)
                responses.append(pb_utils.InferenceResponse(error=error))
        return responses
