// Internal-only diagnostics: reachable only through feature('DEBUG_COMMANDS'), so the
// external build never contains them.
import type { ChatSession } from '../session.js';

export const DEBUG_BANNER = 'Quokkaplex diagnostics (internal build)';

export function debugReport(session: ChatSession): string {
  const lines = [DEBUG_BANNER, `model: ${session.model}`, `turns: ${session.history.length}`];
  for (const s of session.status) lines.push(`  ${s.layer.padEnd(18)} ${s.state.padEnd(9)} ${s.detail}`);
  lines.push(`user type: ${process.env.USER_TYPE}`);
  return lines.join('\n');
}
