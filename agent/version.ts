// The version the agent reports (CLI, host facts, User-Agent). Kept equal to package.json.
export const AGENT_VERSION = '0.1.0';
