"""The curated mutations: each one a realistic bug in a guarantee the README makes.

A mutation replaces ``snippet`` (which must occur exactly once in ``file``) with
``replacement``; the tests in ``tests`` (pytest node ids or files, the fewest and fastest
that should notice) must then fail. Keep the snippets verbatim copies of the code: when the
code changes, the check reports the mutation as an error instead of silently testing nothing.
"""

from __future__ import annotations

from dataclasses import dataclass

DEFAULT_TIMEOUT_S = 300
SERVED_TIMEOUT_S = 600  # tests that start a real `bentoml serve`


@dataclass(frozen=True)
class Mutation:
    name: str
    file: str  # relative to the repository root
    snippet: str
    replacement: str
    tests: tuple[str, ...]
    why: str
    timeout_s: int = DEFAULT_TIMEOUT_S


MUTATIONS: tuple[Mutation, ...] = (
    Mutation(
        name="open_clip_image_ignores_pixels",
        file="runners/families/open_clip_torch.py",
        snippet="self._model.encode_image((unit_pixels(pixels) - self._mean) / self._std)",
        replacement=("self._model.encode_image((unit_pixels(torch.zeros_like(pixels)) - self._mean)"
                     " / self._std)"),
        tests=tuple(f"tests/test_open_clip_families.py::test_image_vectors_equal_open_clip[MobileCLIP/{name}]"
                    for name in ("mobileclip_s1", "mobileclip_s2")),
        why="parity of the FastViT-tower MobileCLIPs (S1, S2) must tell the batch from a black image",
    ),
    Mutation(
        name="open_clip_mean_std_swapped",
        file="runners/families/open_clip_torch.py",
        snippet=("self._mean = torch.tensor(preprocess.mean, device=self._device).view(1, 3, 1, 1)\n"
                 "        self._std = torch.tensor(preprocess.std, device=self._device).view(1, 3, 1, 1)"),
        replacement=("self._mean = torch.tensor(preprocess.std, device=self._device).view(1, 3, 1, 1)\n"
                     "        self._std = torch.tensor(preprocess.mean, device=self._device).view(1, 3, 1, 1)"),
        tests=("tests/test_clip_adapter.py::test_runner_batches_equal_open_clip",),
        why="the Encoder normalises CLIP pixels with the entry's own mean and std",
    ),
    Mutation(
        name="processor_mean_std_swapped",
        file="runners/families/transformers_torch.py",
        snippet=("mean = processor.image_mean if processor.do_normalize else [0.0, 0.0, 0.0]\n"
                 "        std = processor.image_std if processor.do_normalize else [1.0, 1.0, 1.0]"),
        replacement=("mean = processor.image_std if processor.do_normalize else [0.0, 0.0, 0.0]\n"
                     "        std = processor.image_mean if processor.do_normalize else [1.0, 1.0, 1.0]"),
        tests=("tests/test_transformers_families.py::test_prepared_pixels_normalise_to_the_processors_own"
               "[cn-clip-vit-b-16]",),
        why="the Encoder-side normaliser of transformers families equals the processor's own",
    ),
    Mutation(
        name="open_clip_preparer_squashes",
        file="runners/preparers/geometry.py",
        snippet='return ImageGeometry("shortest", resample, "pil", shorter_side=size[0], crop=size)',
        replacement='return ImageGeometry("squash", resample, "pil", squash_size=size)',
        tests=("tests/test_preparers.py::test_preparer_pixels_are_the_families_own",),
        why="the entry-side preparer resizes the shorter side and centre-crops, as open_clip does",
    ),
    Mutation(
        name="processor_crop_rounds_like_torchvision",
        file="runners/preparers/geometry.py",
        snippet="top, left = _crop_origin(pixels.shape[0], pixels.shape[1], crop, _floor_offset)",
        replacement="top, left = _crop_origin(pixels.shape[0], pixels.shape[1], crop, _round_half_even_offset)",
        tests=("tests/test_preparers.py::test_preparer_pixels_are_the_families_own",),
        why="the Hugging Face processors' centre crop rounds its offset down, unlike torchvision's",
    ),
    Mutation(
        name="processor_preparer_without_crop",
        file="runners/preparers/geometry.py",
        snippet="        if crop is None:\n            return pixels\n",
        replacement="        return pixels\n",
        tests=("tests/test_transformers_families.py::test_prepared_pixels_normalise_to_the_processors_own"
               "[cn-clip-vit-b-16]",),
        why="CN-CLIP and BLIP-2 pixels are the processor's resize and centre crop",
    ),
    Mutation(
        name="exif_rotation_reversed",
        file="embedding_server/media/images.py",
        snippet="        ImageOps.exif_transpose(image, in_place=True)\n",
        replacement=("        orientation = image.getexif().get(0x0112)\n"
                     "        ImageOps.exif_transpose(image, in_place=True)\n"
                     "        if orientation in (6, 8):\n"
                     "            image = image.transpose(Image.Transpose.ROTATE_180)\n"),
        tests=("tests/test_images.py::test_every_exif_orientation_decodes_upright",
               "tests/test_hostile_images.py::test_draft_keeps_exif_orientation"),
        why="a quarter turn the wrong way keeps the size: only an asymmetric image shows it",
    ),
    Mutation(
        name="image_pixel_cap_removed",
        file="embedding_server/media/images.py",
        snippet=("    if width * height > max_pixels:\n"
                 "        raise InvalidInput(\n"
                 "            f\"image of {width}x{height} pixels exceeds the limit of {max_pixels} pixels\"\n"
                 "        )\n"),
        replacement="",
        tests=("tests/test_images.py::test_decompression_bomb_is_refused_before_decoding",
               "tests/test_hostile_images.py::test_pixel_cap_is_checked_on_the_full_size_not_the_draft"),
        why="decompression bombs are refused from the header, before any pixel is decoded",
    ),
    Mutation(
        name="coalesced_rows_not_advanced",
        file="embedding_server/encoder/coalescing.py",
        snippet="\n            start += pending.size",
        replacement="",
        tests=("tests/test_coalescing.py::test_requests_arriving_during_a_call_share_the_next_one",),
        why="each request merged into a call gets its own rows, not another caller's",
    ),
    Mutation(
        name="coalescer_never_sheds",
        file="embedding_server/encoder/coalescing.py",
        snippet=("            if pending.since < deadline:\n"
                 "                pending.future.set_exception(ApiError(503, ENCODER_OVERLOADED))\n"
                 "                continue\n"),
        replacement="",
        tests=("tests/test_coalescing.py::test_requests_that_waited_too_long_are_shed_with_503",),
        why="a request that waited past EMBEDDING_MAX_LATENCY_MS is answered 503, not sent",
    ),
    Mutation(
        name="coalescer_wait_in_milliseconds",
        file="embedding_server/encoder/coalescing.py",
        snippet="max_wait_s = settings.max_latency_ms / 1000",
        replacement="max_wait_s = settings.max_latency_ms",
        tests=("tests/test_served_limits.py::test_a_burst_beyond_the_max_latency_is_shed_with_503",),
        why="the entry sheds after EMBEDDING_MAX_LATENCY_MS milliseconds, not that many seconds",
        timeout_s=SERVED_TIMEOUT_S,
    ),
    Mutation(
        name="coalescer_error_fails_the_whole_call",
        file="embedding_server/encoder/coalescing.py",
        snippet="if len(waiting) > 1 and not isinstance(error, ApiError):",
        replacement="if len(waiting) > len(batch) and not isinstance(error, ApiError):",
        tests=("tests/test_hostile_text.py::test_a_failing_item_fails_only_its_own_request"
               "_in_a_merged_call",),
        why="one request's bad input must not fail the requests merged with it",
    ),
    Mutation(
        name="failed_rows_halves_swapped",
        file="embedding_server/encoder/failed_rows.py",
        snippet=("np.concatenate([embed_isolating(encode, batch[:middle], dimension),\n"
                 "                           embed_isolating(encode, batch[middle:], dimension)])"),
        replacement=("np.concatenate([embed_isolating(encode, batch[middle:], dimension),\n"
                     "                           embed_isolating(encode, batch[:middle], dimension)])"),
        tests=("tests/test_hostile_text.py::test_the_encoder_answers_items_that_fail_alone"
               "_as_nan_rows_and_embeds_the_rest",),
        why="the Encoder's isolated re-run returns its rows in the batch's order",
    ),
    Mutation(
        name="concurrency_limit_unwired",
        file="embedding_server/app.py",
        snippet=("app.add_middleware(ConcurrencyLimitMiddleware,\n"
                 "                       max_concurrency=math.ceil(settings.max_concurrency"
                 " / settings.entry_workers),\n"
                 "                       paths=WORK_PATHS)\n"),
        replacement="pass\n",
        tests=("tests/test_served_limits.py::test_requests_beyond_the_concurrency_limit_get_429"
               "_and_status_routes_are_never_limited",),
        why="the served app answers 429 beyond EMBEDDING_MAX_CONCURRENCY, not only the middleware alone",
        timeout_s=SERVED_TIMEOUT_S,
    ),
    Mutation(
        name="concurrency_slot_never_released",
        file="embedding_server/http_api/concurrency_limit.py",
        snippet="            self.in_flight -= 1",
        replacement="            pass",
        tests=("tests/test_concurrency_limit.py",),
        why="a finished request gives its slot back, or the server ends up refusing everything",
    ),
    Mutation(
        name="body_limit_unwired",
        file="embedding_server/app.py",
        snippet=("app.add_middleware(BodyLimitMiddleware, max_bytes=settings.max_body_bytes,"
                 " timeout_s=settings.body_timeout_s)\n"),
        replacement="pass\n",
        tests=("tests/test_served_limits.py::test_a_body_over_the_cap_gets_413",),
        why="the served app caps bodies and receives them whole before a request takes a slot",
        timeout_s=SERVED_TIMEOUT_S,
    ),
    Mutation(
        name="streamed_body_not_counted",
        file="embedding_server/http_api/body_limit.py",
        snippet="        received += len(chunk)\n",
        replacement="",
        tests=("tests/test_body_limit.py",),
        why="a chunked body without Content-Length is counted against the cap as it arrives",
    ),
    Mutation(
        name="request_timeout_not_installed",
        file="service.py",
        snippet="\nrequest_timeout.install()\n",
        replacement="\n",
        tests=("tests/test_request_timeout.py::test_service_uses_it_for_bentoml_traffic_timeouts",),
        why="both services use the time-out without BentoML's per-request timer leak",
    ),
    Mutation(
        name="ssrf_private_addresses_allowed",
        file="embedding_server/media/remote.py",
        snippet="next((reason for reason, hit in checks if hit), None)",
        replacement="next((reason for reason, hit in checks[:4] if hit), None)",
        tests=("tests/test_remote_fetch.py::test_internal_ip_literals_refused_without_network",),
        why="URLs to private, reserved and CGNAT addresses are refused (400) unless allow-listed",
    ),
    Mutation(
        name="ssrf_connects_by_name",
        file="embedding_server/media/remote.py",
        snippet="target = url.copy_with(host=str(address))",
        replacement="target = url",
        tests=("tests/test_remote_fetch.py::test_connects_to_the_checked_address_not_a_rebound_one",),
        why="the download connects to the address that was checked, so DNS rebinding cannot redirect it",
    ),
    Mutation(
        name="dotdot_paths_allowed",
        file="embedding_server/media/local_files.py",
        snippet=("    if \"..\" in path.parts:\n"
                 "        raise access_denied(raw)\n"),
        replacement="",
        tests=("tests/test_video.py::test_escapes_are_403_and_open_nothing",
               "tests/test_video.py::test_manifest_paths_are_confined"),
        why="any `..` component is 403, even one that would resolve inside a root",
    ),
    Mutation(
        name="segment_end_off_by_one",
        file="embedding_server/media/frame_selection.py",
        snippet="end = min(max(math.ceil(stop * fps - EPSILON), first + 1), frame_count)",
        replacement="end = min(max(math.ceil(stop * fps - EPSILON) + 1, first + 1), frame_count)",
        tests=("tests/test_frame_selection.py::test_selected_frames",),
        why="a segment covers frames up to, not including, ceil(end x fps)",
    ),
    Mutation(
        name="frame_indexes_order_lost",
        file="embedding_server/media/video_inputs.py",
        snippet="        if order != wanted:",
        replacement="        if set(order) != set(wanted):",
        tests=("tests/test_video.py::test_video_file_embeds_the_selected_frames"
               "[indexes-beat-everything-in-their-order]",),
        why="frame_indexes come back in the order given, repeats kept, though decoded sorted and once",
    ),
    Mutation(
        name="frame_times_multiplied_by_the_rate",
        file="embedding_server/media/video_inputs.py",
        snippet="return [index / fps for index in frames]",
        replacement="return [index * fps for index in frames]",
        tests=("tests/test_frame_times.py::test_decoded_videos_give_the_selected_frames_and_their_times",),
        why="POST /embeddings/frames gives each frame's time as frame number / fps, when it comes on screen",
    ),
    Mutation(
        name="base64_big_endian",
        file="embedding_server/http_api/encoding.py",
        snippet="dtype=\"<f4\"",
        replacement="dtype=\">f4\"",
        tests=("tests/test_encoding.py::test_base64_round_trip_is_exact",),
        why="base64 vectors are little-endian float32 (the OpenAI convention)",
    ),
    Mutation(
        name="text_cut_removed",
        file="embedding_server/pipeline.py",
        snippet="cut = [text[:self._text_chars] for text in texts]",
        replacement="cut = list(texts)",
        tests=("tests/test_hostile_text.py::test_the_entry_service_sends_only_what_the_context_can_hold",),
        why="the entry sends only the characters that can hold the model's tokens",
    ),
    Mutation(
        name="text_cut_at_token_count",
        file="embedding_server/pipeline.py",
        snippet=("self._text_chars = min(model.context_length, settings.text_token_cap)"
                 " * settings.text_chars_per_token"),
        replacement="self._text_chars = min(model.context_length, settings.text_token_cap)",
        tests=("tests/test_hostile_text.py::test_a_long_prose_text_embeds_exactly_as_upstream_truncates_it",),
        why="a text cut too short embeds differently from upstream's truncation at the context",
    ),
    Mutation(
        name="causal_trim_drops_end_of_text",
        file="runners/families/causal_text.py",
        snippet="tokens[:, :int(_pooled_positions(model, tokens).max()) + 1]",
        replacement="tokens[:, :int(_pooled_positions(model, tokens).max())]",
        tests=("tests/test_causal_text.py::test_trimmed_tower_equals_encode_text",),
        why="the trimmed CLIP text tower keeps the end-of-text position it pools from",
    ),
    Mutation(
        name="tokenizer_cache_unbounded",
        file="runners/families/clip_tokenizer.py",
        snippet="self.cache = LRUCache(CACHE_SIZE)",
        replacement="self.cache = {}",
        tests=("tests/test_hostile_text.py::test_the_tokenizer_cache_stays_bounded"
               "_and_special_tokens_survive_eviction",),
        why="the CLIP tokenizer's word cache is bounded, not growing with every new word",
    ),
    Mutation(
        name="health_answers_from_cache",
        file="embedding_server/pipeline.py",
        snippet="since it first answered.\"\"\"\n        self._info = await self._encoder.info()",
        replacement="since it first answered.\"\"\"\n        await self.model_info()",
        tests=("tests/test_api.py::test_health", "tests/test_api.py::test_model_not_ready",
               "tests/test_served_limits.py::test_health_is_500_while_the_encoder_is_dead"
               "_and_200_once_bentoml_restarts_it"),
        why="/health answers 500 once the Encoder stops answering, even after it answered before",
        timeout_s=SERVED_TIMEOUT_S,
    ),
    Mutation(
        name="api_key_not_compared",
        file="embedding_server/http_api/api_keys.py",
        snippet="        if token is not None and self._known(token):\n",
        replacement="        if token is not None:\n",
        tests=("tests/test_access.py::test_requests_without_a_valid_key_are_401",),
        why="a request bearing a key that is not one of EMBEDDING_API_KEYS is refused",
    ),
    Mutation(
        name="openai_invalid_input_answered_422",
        file="embedding_server/http_api/error_bodies.py",
        snippet="_OPENAI_STATUS = {422: 400}",
        replacement="_OPENAI_STATUS: dict[int, int] = {}",
        tests=("tests/test_openai_api.py::test_invalid_requests_are_400_in_openai_shape",),
        why="/v1/* answers invalid input 400, as OpenAI does, so the SDKs raise BadRequestError",
    ),
    Mutation(
        name="usage_counts_the_padding",
        file="runners/families/clip_tokenizer.py",
        snippet="    return (context - after_last).tolist()",
        replacement="    return [context] * len(tokens)",
        tests=("tests/test_openai_api.py::test_a_single_string_and_its_token_count",),
        why="usage.prompt_tokens counts the tokens the model saw, not the padded context",
    ),
    Mutation(
        name="nested_dimensions_not_renormalised",
        file="embedding_server/nested_dimensions.py",
        snippet="    return leading / np.maximum(np.linalg.norm(leading, axis=1, keepdims=True), 1e-12)",
        replacement="    return leading",
        tests=("tests/test_openai_api.py::test_dimensions_cut_a_matryoshka_model_s_vectors_and_renormalise",),
        why="a shortened Matryoshka vector is normalised again",
    ),
    Mutation(
        name="rank_softmax_without_logit_scale",
        file="embedding_server/scoring.py",
        snippet="        logits = self.logit_scale * np.asarray(cosines, dtype=np.float64)",
        replacement="        logits = np.asarray(cosines, dtype=np.float64)",
        tests=("tests/test_rank.py::test_zero_shot_probabilities_equal_open_clip_s_own",),
        why="/rank's probabilities are the checkpoint's own: softmax of logit_scale x cosine",
    ),
    Mutation(
        name="rank_sigmoid_without_bias",
        file="embedding_server/scoring.py",
        snippet="-(logits + self.logit_bias)",
        replacement="-logits",
        tests=("tests/test_rank.py::test_siglip_probabilities_are_its_sigmoid_with_scale_and_bias",),
        why="SigLIP2's probabilities add its learnt bias before the sigmoid",
    ),
    Mutation(
        name="encoder_not_warmed_up",
        file="service.py",
        snippet=("        warmed = composition.warm_up(self.runner, composition.load_preparer(MODEL, entry.directory),\n"
                 "                                     MODEL.image_size or 0)\n"),
        replacement="        warmed = {}\n",
        tests=("tests/test_warm_up.py::test_the_encoder_warms_up_before_it_can_answer",),
        why="the Encoder runs a forward pass per modality before it answers, so the first request is not slow",
    ),
    Mutation(
        name="metric_parser_reads_wrong_label",
        file="tests/prometheus_text.py",
        snippet="labels.items() <= sample.labels.items()",
        replacement="labels.keys() <= sample.labels.keys()",
        tests=("tests/test_prometheus_text.py",),
        why="the tests' /metrics reader selects series by label value (encode_text, not encode_images)",
    ),
    Mutation(
        name="client_answers_in_completion_order",
        file="client/embedding_client/client.py",
        snippet="                return plan.combine([future.result() for future in futures])",
        replacement="                return plan.combine([future.result() for future in done])",
        tests=("tests/test_client.py::test_concurrent_bulk_requests_answered_last_first_keep_the_input_order",),
        why="the client's bulk requests come back in input order, whatever order the server answers them in",
    ),
    Mutation(
        name="client_retries_nothing",
        file="client/embedding_client/retrying.py",
        snippet="        return error.retryable\n",
        replacement="        return False\n",
        tests=("tests/test_client.py::test_429_and_503_are_retried_then_the_answer_is_the_real_one",),
        why="the client retries 429 and 503 with back-off before raising",
    ),
    Mutation(
        name="index_ignores_changed_content",
        file="client/embedding_client/indexing.py",
        snippet="    if indexed is not None and indexed.content_hash == digest:",
        replacement="    if indexed is not None:",
        tests=("tests/test_client_index.py::test_a_changed_image_is_indexed_again",),
        why="a file whose content changed is indexed again; only unchanged ones are skipped",
    ),
    Mutation(
        name="job_routes_without_keys",
        file="embedding_server/jobs.py",
        snippet="        if settings.api_keys:\n            guarded = ApiKeyMiddleware(",
        replacement="        if False:\n            guarded = ApiKeyMiddleware(",
        tests=("tests/test_jobs.py::test_every_job_route_needs_the_api_key",),
        why="BentoML serves the task routes outside the app: they need the API keys all the same",
        timeout_s=SERVED_TIMEOUT_S,
    ),
    Mutation(
        name="fast_precision_never_applied",
        file="runners/backends/torch_precision.py",
        snippet='        mode = "bf16" if computed == "bf16" else "ieee"\n',
        replacement='        mode = "ieee"\n',
        tests=("tests/test_precision.py::test_exact_and_fast_math_modes",),
        why="EMBEDDING_PRECISION=fast computes PyTorch's matmuls in bf16 where the CPU has it, as /model/current says",
    ),
    Mutation(
        name="int8_broken_tower_kept",
        file="runners/backends/openvino_int8.py",
        snippet="    kept = cosine >= MIN_COSINE\n",
        replacement="    kept = True\n",
        tests=("tests/test_openvino.py::test_int8_is_quantised_once_and_stays_near_float32",),
        why="a tower whose int8 quantisation breaks its vectors stays float",
        timeout_s=SERVED_TIMEOUT_S,
    ),
    Mutation(
        name="exact_openvino_at_its_own_precision",
        file="embedding_server/composition.py",
        snippet='    if settings.precision == "exact":\n        options["INFERENCE_PRECISION_HINT"] = "f32"\n',
        replacement='',
        tests=("tests/test_openvino.py::test_openvino_settings_become_compile_options",),
        why="EMBEDDING_PRECISION=exact compiles OpenVINO in f32, not the device's bf16",
    ),
)
