"""Triton adapter for edgectl.runtime.tokenization.Preprocessor (one or B prompts per request)."""

from pathlib import Path

import numpy as np
import triton_python_backend_utils as pb_utils

from edgectl.runtime.contract import InvalidRequest
from edgectl.runtime.rag import RagBudget, RagPreprocessor, load_template
from edgectl.runtime.request_inputs import RowReader
from edgectl.runtime.tokenization import PreprocessLimits, Preprocessor, stack_rows
from edgectl.runtime.triton_io import model_parameters, strings, text_list

# NVIDIA's preprocessing inputs the CPU deployment cannot honour: refused when set.
REFUSED = {
    "DECODER_QUERY": "decoder_text_input: the served models are decoder-only",
    "IMAGE_BYTES": "image inputs: multimodal models are not served",
    "IMAGE_URL": "image inputs: multimodal models are not served",
    "IMAGES": "image inputs: multimodal models are not served",
    "VIDEO_BYTES": "video inputs: multimodal models are not served",
    "EMBEDDING_BIAS_WORDS": "embedding_bias_words: the engine has no per-token logit bias",
    "EMBEDDING_BIAS_WEIGHTS": "embedding_bias_weights: the engine has no per-token logit bias",
    "PROMPT_TABLE_EXTRA_ID": "prompt_table_extra_id: prompt tuning tables are not supported",
}


def _input(request, name):
    tensor = pb_utils.get_input_tensor_by_name(request, name)
    return None if tensor is None else tensor.as_numpy()


def _refuse_unsupported(request):
    for name, reason in REFUSED.items():
        value = _input(request, name)
        if value is not None and any(bool(item) for item in np.asarray(value).reshape(-1)):
            raise InvalidRequest(f"{reason.split(':')[0]} is not supported ({reason})")


def _row_strings(array, row):
    return [] if array is None else strings(np.asarray(array, dtype=object)[row])


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

    def _rag_rows(self, request, reader, query, batch):
        """Each row's RAG prompt when the request carries rag_passages or rag_question."""
        passages = _input(request, "RAG_PASSAGES")
        question = _input(request, "RAG_QUESTION")
        if passages is None and question is None:
            return [None] * batch
        if _input(request, "MESSAGES") is not None:
            raise InvalidRequest(
                "rag_passages/rag_question cannot be combined with messages: the RAG template "
                "builds the conversation"
            )
        passage_rows = np.asarray([] if passages is None else passages, dtype=object)
        if passage_rows.size % batch:
            raise InvalidRequest(f"rag_passages must hold one list per request row ({batch})")
        passage_rows = passage_rows.reshape(batch, -1) if passage_rows.size else None
        questions = None
        if question is not None:
            questions = text_list(question, "rag_question")
            if len(questions) != batch:
                raise InvalidRequest(
                    f"rag_question must hold exactly one string per request row ({batch}), "
                    f"got {len(questions)}"
                )
        prompts = []
        for row in range(batch):
            texts = [] if passage_rows is None else text_list(passage_rows[row], "rag_passages")
            asked = (
                questions[row] if questions is not None else text_list(query[row], "text_input")[0]
            )
            # RAG prompts go through the chat template unless the request turns it off
            chat = reader.value("APPLY_CHAT_TEMPLATE", row, bool, True)
            max_tokens = reader.value("REQUEST_OUTPUT_LEN", row, int, None)
            prompts.append(self.rag.prompt(texts, asked, max_tokens, chat))
        return prompts

    def _prepare(self, request):
        _refuse_unsupported(request)
        query = np.asarray(_input(request, "QUERY"), dtype=object)
        batch = query.shape[0] if query.ndim > 1 else 1
        query = query.reshape(batch, -1)
        if query.shape[1] != 1:
            raise InvalidRequest(f"text_input must hold one string per row, got {query.shape[1]}")
        reader = RowReader(lambda name: _input(request, name), batch)
        messages = _input(request, "MESSAGES")
        rag_prompts = self._rag_rows(request, reader, query, batch)
        rows = []
        for row, rag in enumerate(rag_prompts):
            chat = reader.value("APPLY_CHAT_TEMPLATE", row, bool, False)
            tensors = self.pre.prepare(
                query[row, 0],
                max_tokens=reader.value("REQUEST_OUTPUT_LEN", row, int, None),
                stop_words=_row_strings(_input(request, "STOP_WORDS_DICT"), row),
                bad_words=_row_strings(_input(request, "BAD_WORDS_DICT"), row),
                end_id=reader.value("END_ID", row, int, None),
                pad_id=reader.value("PAD_ID", row, int, None),
                apply_chat_template=chat,
                messages=None if messages is None else reader.value("MESSAGES", row, str, None),
                prompt_ids=None if rag is None else rag.ids,
            )
            tensors["RAG_PASSAGES_DROPPED"] = np.asarray(
                [rag.passages_dropped if rag else 0], np.int32
            )
            tensors["RAG_TOKENS_DROPPED"] = np.asarray([rag.tokens_dropped if rag else 0], np.int32)
            rows.append(tensors)
        pad = rows[0]["OUT_PAD_ID"][0]
        tensors = stack_rows(rows, {"INPUT_ID": pad, "STOP_WORDS_IDS": -1, "BAD_WORDS_IDS": -1})
        return pb_utils.InferenceResponse(
            output_tensors=[pb_utils.Tensor(name, value) for name, value in tensors.items()]
        )

    def execute(self, requests):
        responses = []
        for request in requests:
            try:
                responses.append(self._prepare(request))
            except (InvalidRequest, ValueError, TypeError, IndexError) as err:
                message = str(err) if isinstance(err, InvalidRequest) else f"malformed input: {err}"
                error = pb_utils.TritonError(message, pb_utils.TritonError.INVALID_ARG)
                responses.append(pb_utils.InferenceResponse(error=error))
        return responses
