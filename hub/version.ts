// The version every binary and package reports.
export const VERSION = '0.1.0';
