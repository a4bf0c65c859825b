// moat-chat's build flags: the one source of what each variant contains.
export default {
  variants: ['internal', 'external'],
  features: {
    // Internal-only commands (/debug) and the diagnostics they print.
    DEBUG_COMMANDS: { internal: true, external: false },
    // Gate 1 of anti-distillation: compiled into both variants.
    ANTI_DISTILLATION: { internal: true, external: true },
  },
  define: {
    'process.env.USER_TYPE': { internal: 'ant', external: 'external' },
  },
};
