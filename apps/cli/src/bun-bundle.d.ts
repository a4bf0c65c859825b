// Type of Bun's compile-time feature() for the fixtures (Bun's own types ship it as well).
declare module 'bun:bundle' {
  export function feature(name: string): boolean;
}
