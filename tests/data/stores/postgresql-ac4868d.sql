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
CREATE TABLE llm_calls (
    id character varying(32) NOT NULL,
    session_id character varying(32) NOT NULL,
    project_name character varying(200) NOT NULL,
    "timestamp" timestamp with time zone NOT NULL,
    provider character varying(32) NOT NULL,
    model character varying(200) NOT NULL,
    response_model character varying(200),
    api character varying(64),
    agent_name character varying(200),
    operation character varying(200),
    prompt_tokens integer,
    completion_tokens integer,
    cached_tokens integer,
    cache_creation_tokens integer,
    reasoning_tokens integer,
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
    metadata jsonb NOT NULL
);
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
    prompt_tokens integer NOT NULL,
    completion_tokens integer NOT NULL,
    cached_tokens integer NOT NULL,
    reasoning_tokens integer NOT NULL,
    total_tokens integer NOT NULL,
    cost_usd double precision,
    total_latency_ms double precision NOT NULL,
    error_count integer NOT NULL,
    duration_ms double precision
);
INSERT INTO agent_spans VALUES ('01a232390d810c563bcf2dcd6dc7cab7', '01a232390d81bd0261be55be0d8f4b04', NULL, 'Planner', NULL, '2026-11-20 10:00:00+00', '2026-11-20 10:30:00+00', true, NULL);
INSERT INTO llm_calls VALUES ('01a232390d813c306563c594346fd9a6', '01a232390d81bd0261be55be0d8f4b04', 'upgrade-fixture', '2026-11-20 10:05:00+00', 'openai', 'gpt-4o', NULL, NULL, 'Planner', NULL, 1000, 200, NULL, NULL, NULL, 400, NULL, false, true, NULL, NULL, NULL, NULL, 0, 0, 'aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa', '{}');
INSERT INTO llm_calls VALUES ('01a232390d81fa2c312d3e047160c0a7', '01a232390d81bd0261be55be0d8f4b04', 'upgrade-fixture', '2026-11-20 10:20:00+00', 'openai', 'gpt-4o', NULL, NULL, 'Planner', NULL, 1000, 200, NULL, NULL, NULL, 600, NULL, false, true, NULL, NULL, NULL, NULL, 0, 0, 'aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa', '{}');
INSERT INTO llm_calls VALUES ('01a232390d819d8e4c18e6b6495d6a22', '01a232390d81bd0261be55be0d8f4b04', 'upgrade-fixture', '2026-11-20 11:10:00+00', 'anthropic', 'claude-3-5-sonnet-20241022', NULL, NULL, 'Writer', NULL, 3000, 500, NULL, NULL, NULL, 1200, 300, true, true, NULL, NULL, NULL, NULL, 0, 0, 'cccccccccccccccccccccccccccccccc', '{}');
INSERT INTO llm_calls VALUES ('01a232390d81543eca11f3f47cb749e8', '01a232390d81bd0261be55be0d8f4b04', 'upgrade-fixture', '2026-11-20 11:30:00+00', 'openai', 'gpt-4o-mini', NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, 50, NULL, false, false, 'RateLimitError', 'rate limited', NULL, NULL, 2, 2, 'dddddddddddddddddddddddddddddddd', '{}');
INSERT INTO llm_calls VALUES ('01a232390d8111841580eb2a97e8da7f', '01a232390d8164d8f75c50b3098bf9d1', 'upgrade-fixture', '2026-11-20 11:45:00+00', 'openai', 'gpt-4o-mini', NULL, NULL, 'Researcher', NULL, 500, 100, NULL, NULL, NULL, 200, NULL, false, true, NULL, NULL, NULL, NULL, 0, 0, 'bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb', '{}');
INSERT INTO llm_calls VALUES ('01a232390d816a21be86e59d026a306f', '01a232390d8164d8f75c50b3098bf9d1', 'upgrade-fixture', '2026-11-20 11:50:00+00', 'openai', 'gpt-4o-mini', NULL, NULL, 'Researcher', NULL, 500, 100, NULL, NULL, NULL, 300, NULL, false, true, NULL, NULL, NULL, NULL, 0, 0, 'aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa', '{}');
INSERT INTO sessions VALUES ('01a232390d81bd0261be55be0d8f4b04', 'upgrade-fixture', 'alpha', NULL, '2026-12-01 15:28:49.53716+00', '2026-12-01 15:28:49.537695+00', 'ok', NULL, NULL, '{"user": "u1"}', 4, 5000, 900, 0, 0, 5900, 0.025500000000000002, 2250, 1, 0.535);
INSERT INTO sessions VALUES ('01a232390d8164d8f75c50b3098bf9d1', 'upgrade-fixture', 'beta', NULL, '2026-12-01 15:28:49.537753+00', '2026-12-01 15:28:49.537788+00', 'ok', NULL, NULL, '{}', 2, 1000, 200, 0, 0, 1200, 0.00027, 500, 0, 0.034999999999999996);
ALTER TABLE ONLY agent_spans
    ADD CONSTRAINT agent_spans_pkey PRIMARY KEY (id);
ALTER TABLE ONLY llm_calls
    ADD CONSTRAINT llm_calls_pkey PRIMARY KEY (id);
ALTER TABLE ONLY sessions
    ADD CONSTRAINT sessions_pkey PRIMARY KEY (id);
CREATE INDEX ix_agent_spans_session ON agent_spans USING btree (session_id, started_at);
CREATE INDEX ix_llm_calls_project_timestamp ON llm_calls USING btree (project_name, "timestamp");
CREATE INDEX ix_llm_calls_session ON llm_calls USING btree (session_id, "timestamp");
CREATE INDEX ix_llm_calls_timestamp ON llm_calls USING btree ("timestamp");
CREATE INDEX ix_sessions_project_started ON sessions USING btree (project_name, started_at);
CREATE INDEX ix_sessions_started ON sessions USING btree (started_at);
