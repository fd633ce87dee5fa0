// One catalogue of errors with stable codes. Every error a user can see comes from here,
// with a message naming what was wrong and the cause attached.

export const ERROR_CODES = {
  TG_ERR_USAGE: { exit: 2, http: 400, text: 'bad command-line usage' },
  TG_ERR_INVALID_ARGUMENT: { exit: 2, http: 400, text: 'invalid argument' },
  TG_ERR_CONFIG: { exit: 2, http: 400, text: 'invalid configuration' },
  TG_ERR_POLICY_REJECTED: { exit: 1, http: 422, text: 'policy document refused' },
  TG_ERR_NOT_ROOT: { exit: 1, http: 500, text: 'root privileges required' },
  TG_ERR_LAB_EXISTS: { exit: 1, http: 409, text: 'a lab with this prefix already exists' },
  TG_ERR_LAB_NOT_FOUND: { exit: 1, http: 404, text: 'no lab with this prefix' },
  TG_ERR_NOT_FOUND: { exit: 1, http: 404, text: 'not found' },
  TG_ERR_CONFLICT: { exit: 1, http: 409, text: 'conflict' },
  TG_ERR_COMMAND_FAILED: { exit: 1, http: 500, text: 'an external command failed' },
  TG_ERR_NATIVE: { exit: 1, http: 500, text: 'native addon failure' },
  TG_ERR_UAPI: { exit: 1, http: 400, text: 'invalid userspace API request' },
  TG_ERR_PAYLOAD_TOO_LARGE: { exit: 1, http: 413, text: 'request body too large' },
  TG_ERR_METHOD_NOT_ALLOWED: { exit: 1, http: 405, text: 'method not allowed on this resource' },
  TG_ERR_UNSUPPORTED_MEDIA_TYPE: { exit: 1, http: 415, text: 'request body of an unsupported media type' },
  TG_ERR_BAD_SIGNATURE: { exit: 1, http: 400, text: 'a signature did not verify' },
  TG_ERR_INTERNAL: { exit: 1, http: 500, text: 'internal error' },
  TG_ERR_INTERRUPTED: { exit: 130, http: 503, text: 'interrupted by a signal' },
  TG_ERR_UNAUTHENTICATED: { exit: 1, http: 401, text: 'no acceptable client identity' },
  TG_ERR_FORBIDDEN: { exit: 1, http: 403, text: 'not authorised' },
  TG_ERR_TOKEN: { exit: 1, http: 503, text: 'PKCS#11 token failure' },
  TG_ERR_POOL_EXHAUSTED: { exit: 1, http: 409, text: 'address pool exhausted' },
  TG_ERR_STEP_FAILED: { exit: 1, http: 502, text: 'a lifecycle step failed' },
  TG_ERR_STORE_UNAVAILABLE: { exit: 1, http: 503, text: 'the store cannot be reached or has no quorum' },
  TG_ERR_STORE_FULL: { exit: 1, http: 507, text: "the store's disk is full" },
  TG_ERR_NOT_LEADER: { exit: 1, http: 503, text: 'this replica does not lead and no leader is known' },
} as const;

export type ErrorCode = keyof typeof ERROR_CODES;

export class TgError extends Error {
  readonly code: ErrorCode;

  constructor(code: ErrorCode, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'TgError';
    this.code = code;
  }

  get exitCode(): number {
    return ERROR_CODES[this.code].exit;
  }

  get httpStatus(): number {
    return ERROR_CODES[this.code].http;
  }
}
