// Opens a token file this process cannot delete, commits, and reports what happened.
import { openTokenFile } from '../dist/index.js';

const warnings = [];
const vault = await openTokenFile(process.argv[2], { onWarning: (m) => warnings.push(m) });
const length = vault.use((t) => t.length);
const result = await vault.commit();
vault.dispose();
console.log(JSON.stringify({ length, result, warnings }));
