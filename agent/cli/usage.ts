// Usage lines shared by the help text and the commands (kept apart so --help loads nothing else).
export const ENROLL_USAGE = `sepal-agent enroll --hub URL --ca-sha256 HEX [--token TOKEN] [--name NAME] [--org ORG]
                   [--state-dir DIR] [--force] [--json]`;
