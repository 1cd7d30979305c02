// calc: evaluates arithmetic expressions, from the arguments (joined by spaces) or from each
// line of standard input. Prints each result with "%.10g".
//
//   expr    := term (('+' | '-') term)*
//   term    := unary (('*' | '/' | '%') unary)*
//   unary   := ('-' | '+') unary | power
//   power   := primary ('^' unary)?          right-associative, binds tighter than unary minus
//   primary := number | constant | function '(' expr ')' | '(' expr ')'
//
// Constants: pi, e. Functions: sqrt sin cos ln exp ceil floor abs.
// Built without exceptions: the parser records the first error and unwinds by returning.

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <optional>
#include <string>
#include <string_view>

namespace {

struct Function {
    std::string_view name;
    double (*apply)(double);
};

const Function functions[] = {
    {"sqrt", [](double x) { return std::sqrt(x); }},
    {"sin", [](double x) { return std::sin(x); }},
    {"cos", [](double x) { return std::cos(x); }},
    {"ln", [](double x) { return std::log(x); }},
    {"exp", [](double x) { return std::exp(x); }},
    {"ceil", [](double x) { return std::ceil(x); }},
    {"floor", [](double x) { return std::floor(x); }},
    {"abs", [](double x) { return std::fabs(x); }},
};

struct Constant {
    std::string_view name;
    double value;
};

const Constant constants[] = {
    {"pi", 3.14159265358979323846},
    {"e", 2.71828182845904523536},
};

struct Error {
    std::string message;
    size_t column;  // 1-based
};

bool is_digit(char c) { return c >= '0' && c <= '9'; }
bool is_alpha(char c) { return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_'; }
bool is_space(char c) { return c == ' ' || c == '\t' || c == '\r' || c == '\n' || c == '\v' || c == '\f'; }

class Parser {
public:
    explicit Parser(std::string_view text) : text_(text) {}

    // Evaluates the whole text: a value, or the first error.
    std::optional<double> evaluate() {
        skip_space();
        if (at_end()) {
            fail("empty expression");
            return std::nullopt;
        }
        double value = expression();
        if (!error_ && !at_end())
            fail_unexpected();
        if (error_)
            return std::nullopt;
        return value;
    }

    const Error &error() const { return *error_; }

private:
    std::string_view text_;
    size_t pos_ = 0;
    std::optional<Error> error_;

    bool at_end() const { return pos_ >= text_.size(); }
    char peek() const { return at_end() ? '\0' : text_[pos_]; }

    void skip_space() {
        while (!at_end() && is_space(text_[pos_]))
            pos_++;
    }

    // Consumes `c` (and the space after it) if it is next.
    bool accept(char c) {
        if (at_end() || text_[pos_] != c)
            return false;
        pos_++;
        skip_space();
        return true;
    }

    void fail(std::string message, size_t at) {
        if (!error_)
            error_ = Error{std::move(message), at + 1};
    }
    void fail(std::string message) { fail(std::move(message), pos_); }

    std::string describe_next() const {
        if (at_end())
            return "end of input";
        return std::string("'") + text_[pos_] + "'";
    }

    void fail_unexpected() { fail("unexpected " + describe_next()); }

    double expression() {
        double value = term();
        while (!error_) {
            if (accept('+'))
                value += term();
            else if (accept('-'))
                value -= term();
            else
                break;
        }
        return value;
    }

    double term() {
        double value = unary();
        while (!error_) {
            size_t op_pos = pos_;
            char op = peek();
            if (op != '*' && op != '/' && op != '%')
                break;
            accept(op);
            double rhs = unary();
            if (error_)
                break;
            if (op == '*') {
                value *= rhs;
            } else if (rhs == 0) {
                fail(op == '/' ? "division by zero" : "modulo by zero", op_pos);
            } else {
                value = op == '/' ? value / rhs : std::fmod(value, rhs);
            }
        }
        return value;
    }

    double unary() {
        if (accept('-'))
            return -unary();
        if (accept('+'))
            return unary();
        return power();
    }

    double power() {
        double base = primary();
        if (!error_ && accept('^'))
            return std::pow(base, unary());
        return base;
    }

    double primary() {
        if (error_)
            return 0;
        char c = peek();
        if (accept('(')) {
            double value = expression();
            expect_close();
            return value;
        }
        if (is_digit(c) || c == '.')
            return number();
        if (is_alpha(c))
            return name();
        fail_unexpected();
        return 0;
    }

    void expect_close() {
        if (!error_ && !accept(')'))
            fail("expected ')', found " + describe_next());
    }

    double number() {
        size_t start = pos_;
        size_t digits = 0;
        while (is_digit(peek()))
            pos_++, digits++;
        if (peek() == '.') {
            pos_++;
            while (is_digit(peek()))
                pos_++, digits++;
        }
        if (digits == 0) {
            fail("malformed number", start);
            return 0;
        }
        // An exponent only if digits follow, so that "2e" stays a malformed trailing 'e'.
        if (peek() == 'e' || peek() == 'E') {
            size_t mark = pos_++;
            if (peek() == '+' || peek() == '-')
                pos_++;
            if (is_digit(peek())) {
                while (is_digit(peek()))
                    pos_++;
            } else {
                pos_ = mark;
            }
        }
        std::string token(text_.substr(start, pos_ - start));
        skip_space();
        return std::strtod(token.c_str(), nullptr);
    }

    double name() {
        size_t start = pos_;
        while (is_alpha(peek()) || is_digit(peek()))
            pos_++;
        std::string_view id = text_.substr(start, pos_ - start);
        skip_space();

        for (const Constant &constant : constants)
            if (constant.name == id)
                return constant.value;
        for (const Function &function : functions) {
            if (function.name != id)
                continue;
            if (!accept('(')) {
                fail("expected '(' after '" + std::string(id) + "', found " + describe_next());
                return 0;
            }
            size_t arg_pos = pos_;
            double arg = expression();
            expect_close();
            if (error_)
                return 0;
            if (id == "sqrt" && arg < 0)
                fail("sqrt of a negative number", arg_pos);
            else if (id == "ln" && arg <= 0)
                fail("ln of a non-positive number", arg_pos);
            return function.apply(arg);
        }
        fail("unknown name '" + std::string(id) + "'", start);
        return 0;
    }
};

// Evaluates and prints one expression; `line` is 0 for the command line. Returns success.
bool run(std::string_view text, unsigned line) {
    Parser parser(text);
    std::optional<double> value = parser.evaluate();
    if (!value) {
        const Error &error = parser.error();
        if (line == 0)
            std::fprintf(stderr, "calc: error: %s at column %zu\n", error.message.c_str(), error.column);
        else
            std::fprintf(stderr, "calc: error: line %u: %s at column %zu\n", line, error.message.c_str(),
                         error.column);
        return false;
    }
    std::printf("%.10g\n", *value);
    return true;
}

}  // namespace

int main(int argc, char **argv) {
    bool ok = true;
    if (argc > 1) {
        std::string joined;
        for (int i = 1; i < argc; i++) {
            if (i > 1)
                joined += ' ';
            joined += argv[i];
        }
        ok = run(joined, 0);
    } else {
        // stdio rather than iostream: the iostream machinery would triple the program's size.
        std::string text;
        unsigned line = 0;
        char chunk[256];
        bool more = true;
        while (more) {
            text.clear();
            more = false;
            while (std::fgets(chunk, sizeof chunk, stdin)) {
                text += chunk;
                if (!text.empty() && text.back() == '\n') {
                    text.pop_back();
                    more = true;
                    break;
                }
            }
            if (!more && text.empty())
                break;
            line++;
            bool blank = true;
            for (char c : text)
                blank = blank && is_space(c);
            if (!blank)
                ok = run(text, line) && ok;
            std::fflush(stdout);
        }
        if (std::ferror(stdin)) {
            std::fprintf(stderr, "calc: error reading standard input\n");
            ok = false;
        }
    }
    if (std::fflush(stdout) != 0) {
        std::perror("calc: write error");
        return 1;
    }
    return ok ? 0 : 1;
}
