import type {ErrorCode} from './contract.js';
import {errorTable} from '../errors.js';

/** The hint of an agent error code: the error table's (src/errors.ts), the one place hints are written. */
export const hintFor = (code: ErrorCode): string => errorTable[code].hint;
