import js from '@eslint/js'
import prettier from 'eslint-config-prettier/flat'
import tseslint from 'typescript-eslint'

export default tseslint.config(
  { ignores: ['dist/', 'node_modules/', 'models/', 'coverage/', 'load/results/', '.gpu/', '.cache/'] },
  js.configs.recommended,
  ...tseslint.configs.recommended,
  {
    // The demo page's script runs in the browser, not in Node.
    files: ['src/http/ui/**/*.js'],
    languageOptions: {
      globals: { document: 'readonly', fetch: 'readonly', URL: 'readonly', URLSearchParams: 'readonly', AbortController: 'readonly' }
    }
  },
  {
    languageOptions: { globals: { process: 'readonly', console: 'readonly', Buffer: 'readonly' } },
    rules: {
      '@typescript-eslint/no-unused-vars': ['error', { argsIgnorePattern: '^_', varsIgnorePattern: '^_' }],
      '@typescript-eslint/consistent-type-imports': 'error',
      'no-console': 'off',
      eqeqeq: ['error', 'smart'],
      'prefer-const': 'error'
    }
  },
  // Last: turns off every rule about layout, which is prettier's alone (npm run format).
  prettier
)
