CREATE TABLE agent_spans (
    id character varying(32) NOT NULL,
    session_id character varying(32) NOT NULL,
    parent_id character varying(32),
    agent_name character varying(200) NOT NULL,
    operation character varying(200),
    started_at timestamp with time zone NOT NULL,
    ended_at timestamp with time zone NOT NULL,
    success boolean NOT NULL,
    error_type character varying(200)
);
CREATE TABLE call_rollups (
    project_name character varying(200) NOT NULL,
    hour timestamp with time zone NOT NULL,
    provider character varying(32) NOT NULL,
    provider_name character varying(64) NOT NULL,
    model character varying(200) NOT NULL,
    requested_model character varying(200) NOT NULL,
    agent_name character varying(200) NOT NULL,
    operation character varying(200) NOT NULL,
    success boolean NOT NULL,
    error_type character varying(200) NOT NULL,
    tokens_known boolean NOT NULL,
    long_prompt boolean NOT NULL,
    repeated boolean NOT NULL,
    calls bigint NOT NULL,
    prompt_tokens bigint NOT NULL,
    completion_tokens bigint NOT NULL,
    cached_tokens bigint NOT NULL,
    cache_creation_tokens bigint NOT NULL,
    reasoning_tokens bigint NOT NULL,
    latency_ms double precision NOT NULL,
    largest_prompt_tokens bigint NOT NULL,
    retries bigint NOT NULL,
    rate_limited_retries bigint NOT NULL,
    rate_limited_calls bigint NOT NULL,
    first_token_calls bigint NOT NULL,
    first_token_ms double precision NOT NULL,
    latency_histogram bytea NOT NULL,
    first_token_histogram bytea NOT NULL
);
COMMENT ON TABLE call_rollups IS 'calls summed per hour and report dimension; '''' stands for a missing agent, operation or error type';
CREATE TABLE llm_calls (
    id character varying(32) NOT NULL,
    session_id character varying(32) NOT NULL,
    project_name character varying(200) NOT NULL,
    "timestamp" timestamp with time zone NOT NULL,
    provider character varying(32) NOT NULL,
    provider_name character varying(64),
    model character varying(200) NOT NULL,
    response_model character varying(200),
    api character varying(64),
    agent_name character varying(200),
    operation character varying(200),
    prompt_tokens bigint,
    completion_tokens bigint,
    cached_tokens bigint,
    cache_creation_tokens bigint,
    reasoning_tokens bigint,
    latency_ms double precision NOT NULL,
    time_to_first_token_ms double precision,
    streamed boolean NOT NULL,
    success boolean NOT NULL,
    error_type character varying(200),
    error_message text,
    finish_reason character varying(64),
    tool_call_count integer,
    retries integer NOT NULL,
    rate_limited_retries integer NOT NULL,
    request_hash character varying(64),
    repeated boolean DEFAULT false NOT NULL,
    metadata jsonb NOT NULL,
    prompt text,
    completion text
);
COMMENT ON COLUMN llm_calls.provider_name IS 'the service that answered; NULL only in rows stored without it (by an earlier obsdeco, or imported), filled from provider when the rollups are rebuilt';
COMMENT ON COLUMN llm_calls.repeated IS 'an identical successful request was stored earlier in the project';
COMMENT ON COLUMN llm_calls.prompt IS 'captured only with capture_content; scrubbed, maybe encrypted';
COMMENT ON COLUMN llm_calls.completion IS 'captured only with capture_content';
CREATE TABLE request_hashes (
    project_name character varying(200) NOT NULL,
    request_hash character varying(64) NOT NULL,
    calls bigint NOT NULL
);
COMMENT ON TABLE request_hashes IS 'successful calls per identical request, to tell repeats at write time';
CREATE TABLE sessions (
    id character varying(32) NOT NULL,
    project_name character varying(200) NOT NULL,
    name character varying(200),
    parent_id character varying(32),
    started_at timestamp with time zone NOT NULL,
    ended_at timestamp with time zone,
    status character varying(16) NOT NULL,
    error_type character varying(200),
    error_message text,
    metadata jsonb NOT NULL,
    call_count integer NOT NULL,
    prompt_tokens bigint NOT NULL,
    completion_tokens bigint NOT NULL,
    cached_tokens bigint NOT NULL,
    reasoning_tokens bigint NOT NULL,
    total_tokens bigint NOT NULL,
    cost_usd double precision,
    total_latency_ms double precision NOT NULL,
    error_count integer NOT NULL,
    duration_ms double precision
);
INSERT INTO agent_spans VALUES ('01a232392c33594218596964dd3a6690', '01a232392c33956b3bbf41e8bd13da9d', NULL, 'Planner', NULL, '2026-11-20 10:00:00+00', '2026-11-20 10:30:00+00', true, NULL);
INSERT INTO call_rollups VALUES ('upgrade-fixture', '2026-11-20 10:00:00+00', 'openai', 'openai', 'gpt-4o', 'gpt-4o', 'Planner', '', true, '', true, false, false, 1, 1000, 200, 0, 0, 0, 400, 1000, 0, 0, 0, 0, 0, '\x2c0101000000', '\x');
INSERT INTO call_rollups VALUES ('upgrade-fixture', '2026-11-20 10:00:00+00', 'openai', 'openai', 'gpt-4o', 'gpt-4o', 'Planner', '', true, '', true, false, true, 1, 1000, 200, 0, 0, 0, 600, 1000, 0, 0, 0, 0, 0, '\x400101000000', '\x');
INSERT INTO call_rollups VALUES ('upgrade-fixture', '2026-11-20 11:00:00+00', 'anthropic', 'anthropic', 'claude-3-5-sonnet-20241022', 'claude-3-5-sonnet-20241022', 'Writer', '', true, '', true, true, false, 1, 3000, 500, 0, 0, 0, 1200, 3000, 0, 0, 0, 1, 300, '\x630101000000', '\x1e0101000000');
INSERT INTO call_rollups VALUES ('upgrade-fixture', '2026-11-20 11:00:00+00', 'openai', 'openai', 'gpt-4o-mini', 'gpt-4o-mini', '', '', false, 'RateLimitError', false, false, false, 1, 0, 0, 0, 0, 0, 50, 0, 2, 2, 1, 0, 0, '\xc40001000000', '\x');
INSERT INTO call_rollups VALUES ('upgrade-fixture', '2026-11-20 11:00:00+00', 'openai', 'openai', 'gpt-4o-mini', 'gpt-4o-mini', 'Researcher', '', true, '', true, false, false, 1, 500, 100, 0, 0, 0, 200, 500, 0, 0, 0, 0, 0, '\x090101000000', '\x');
INSERT INTO call_rollups VALUES ('upgrade-fixture', '2026-11-20 11:00:00+00', 'openai', 'openai', 'gpt-4o-mini', 'gpt-4o-mini', 'Researcher', '', true, '', true, false, true, 1, 500, 100, 0, 0, 0, 300, 500, 0, 0, 0, 0, 0, '\x1e0101000000', '\x');
INSERT INTO llm_calls VALUES ('01a232392c33cc55ca8dd56c513abb9e', '01a232392c33956b3bbf41e8bd13da9d', 'upgrade-fixture', '2026-11-20 10:05:00+00', 'openai', 'openai', 'gpt-4o', NULL, NULL, 'Planner', NULL, 1000, 200, NULL, NULL, NULL, 400, NULL, false, true, NULL, NULL, NULL, NULL, 0, 0, 'aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa', false, '{}', NULL, NULL);
INSERT INTO llm_calls VALUES ('01a232392c33c752f2c89c0f1f376835', '01a232392c33956b3bbf41e8bd13da9d', 'upgrade-fixture', '2026-11-20 10:20:00+00', 'openai', 'openai', 'gpt-4o', NULL, NULL, 'Planner', NULL, 1000, 200, NULL, NULL, NULL, 600, NULL, false, true, NULL, NULL, NULL, NULL, 0, 0, 'aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa', true, '{}', NULL, NULL);
INSERT INTO llm_calls VALUES ('01a232392c33e0dd51cb8421bd9b7da8', '01a232392c33956b3bbf41e8bd13da9d', 'upgrade-fixture', '2026-11-20 11:10:00+00', 'anthropic', 'anthropic', 'claude-3-5-sonnet-20241022', NULL, NULL, 'Writer', NULL, 3000, 500, NULL, NULL, NULL, 1200, 300, true, true, NULL, NULL, NULL, NULL, 0, 0, 'cccccccccccccccccccccccccccccccc', false, '{}', NULL, NULL);
INSERT INTO llm_calls VALUES ('01a232392c33f38489fee7536f30b8ff', '01a232392c33956b3bbf41e8bd13da9d', 'upgrade-fixture', '2026-11-20 11:30:00+00', 'openai', 'openai', 'gpt-4o-mini', NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, 50, NULL, false, false, 'RateLimitError', 'rate limited', NULL, NULL, 2, 2, 'dddddddddddddddddddddddddddddddd', false, '{}', NULL, NULL);
INSERT INTO llm_calls VALUES ('01a232392c331f7efd96a6cccdb57bb9', '01a232392c33a85039a8187f50805e3e', 'upgrade-fixture', '2026-11-20 11:45:00+00', 'openai', 'openai', 'gpt-4o-mini', NULL, NULL, 'Researcher', NULL, 500, 100, NULL, NULL, NULL, 200, NULL, false, true, NULL, NULL, NULL, NULL, 0, 0, 'bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb', false, '{}', NULL, NULL);
INSERT INTO llm_calls VALUES ('01a232392c33a3a244338d05b8ff4b8a', '01a232392c33a85039a8187f50805e3e', 'upgrade-fixture', '2026-11-20 11:50:00+00', 'openai', 'openai', 'gpt-4o-mini', NULL, NULL, 'Researcher', NULL, 500, 100, NULL, NULL, NULL, 300, NULL, false, true, NULL, NULL, NULL, NULL, 0, 0, 'aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa', true, '{}', NULL, NULL);
INSERT INTO request_hashes VALUES ('upgrade-fixture', 'aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa', 3);
INSERT INTO request_hashes VALUES ('upgrade-fixture', 'bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb', 1);
INSERT INTO request_hashes VALUES ('upgrade-fixture', 'cccccccccccccccccccccccccccccccc', 1);
INSERT INTO sessions VALUES ('01a232392c33956b3bbf41e8bd13da9d', 'upgrade-fixture', 'alpha', NULL, '2026-12-01 15:28:57.395087+00', '2026-12-01 15:28:57.395346+00', 'ok', NULL, NULL, '{"user": "u1"}', 4, 5000, 900, 0, 0, 5900, 0.025500000000000002, 2250, 1, 0.259);
INSERT INTO sessions VALUES ('01a232392c33a85039a8187f50805e3e', 'upgrade-fixture', 'beta', NULL, '2026-12-01 15:28:57.395404+00', '2026-12-01 15:28:57.395436+00', 'ok', NULL, NULL, '{}', 2, 1000, 200, 0, 0, 1200, 0.00027, 500, 0, 0.032);
ALTER TABLE ONLY agent_spans
    ADD CONSTRAINT agent_spans_pkey PRIMARY KEY (id);
ALTER TABLE ONLY call_rollups
    ADD CONSTRAINT call_rollups_pkey PRIMARY KEY (project_name, hour, provider, provider_name, model, requested_model, agent_name, operation, success, error_type, tokens_known, long_prompt, repeated);
ALTER TABLE ONLY llm_calls
    ADD CONSTRAINT llm_calls_pkey PRIMARY KEY (id);
ALTER TABLE ONLY request_hashes
    ADD CONSTRAINT request_hashes_pkey PRIMARY KEY (project_name, request_hash);
ALTER TABLE ONLY sessions
    ADD CONSTRAINT sessions_pkey PRIMARY KEY (id);
CREATE INDEX ix_agent_spans_session ON agent_spans USING btree (session_id, started_at);
CREATE INDEX ix_llm_calls_project_timestamp ON llm_calls USING btree (project_name, "timestamp");
CREATE INDEX ix_llm_calls_session ON llm_calls USING btree (session_id, "timestamp");
CREATE INDEX ix_llm_calls_timestamp ON llm_calls USING btree ("timestamp");
CREATE INDEX ix_request_hashes_repeated ON request_hashes USING btree (project_name, calls) WHERE (calls > 1);
CREATE INDEX ix_sessions_project_started ON sessions USING btree (project_name, started_at);
CREATE INDEX ix_sessions_started ON sessions USING btree (started_at);
